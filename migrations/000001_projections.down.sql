DROP TABLE dead_letters;
DROP SCHEMA completions_all, completions_first, completions_latest CASCADE;
DROP FUNCTION taskledger_create_projection(text, text);
