DROP FUNCTION taskledger_create_timeline(text);
ALTER FUNCTION taskledger_create_timeline_tables(text) RENAME TO taskledger_create_timeline;
DROP FUNCTION taskledger_create_projection(text, text);
ALTER FUNCTION taskledger_create_projection_tables(text, text) RENAME TO taskledger_create_projection;

-- Back to one checkpoint per projection: the lowest partition checkpoint,
-- below which every event is applied.
DO $do$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['completions_all', 'completions_first', 'completions_latest', 'timeline'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s);
        EXECUTE format('UPDATE %I.checkpoint SET last_seq = (SELECT min(last_seq) FROM %I.checkpoint) WHERE partition = 0', s, s);
        EXECUTE format('DELETE FROM %I.checkpoint WHERE partition <> 0', s);
        EXECUTE format($$ALTER TABLE %I.checkpoint DROP COLUMN partition,
            ADD COLUMN singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)$$, s);
    END LOOP;
END
$do$;
DROP FUNCTION taskledger_partition_checkpoint(text);
