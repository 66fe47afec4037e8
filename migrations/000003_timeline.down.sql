DROP SCHEMA IF EXISTS timeline, timeline_rebuild CASCADE;
DROP FUNCTION taskledger_create_timeline(text);
