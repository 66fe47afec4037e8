ALTER TABLE projection_rebuilds DROP COLUMN failed_at, DROP COLUMN error;
DROP TABLE stream_identity;
