-- A projection split into partitions keeps one checkpoint row per
-- partition: the last stream sequence of that partition's events applied.
-- The row for partition 0 is the former single checkpoint.
CREATE FUNCTION taskledger_partition_checkpoint(schema_name text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($$ALTER TABLE %I.checkpoint
        DROP COLUMN singleton,
        ADD COLUMN partition integer NOT NULL DEFAULT 0 CHECK (partition >= 0),
        ADD PRIMARY KEY (partition)$$, schema_name);
END
$fn$;

SELECT taskledger_partition_checkpoint(s)
FROM unnest(ARRAY['completions_all', 'completions_first', 'completions_latest', 'timeline']) AS s
WHERE EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s);

-- Projections created from now on (rebuild shadows) get the partitioned
-- checkpoint too; the tables stay defined in one place each.
ALTER FUNCTION taskledger_create_projection(text, text) RENAME TO taskledger_create_projection_tables;
CREATE FUNCTION taskledger_create_projection(schema_name text, policy text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM taskledger_create_projection_tables(schema_name, policy);
    PERFORM taskledger_partition_checkpoint(schema_name);
END
$fn$;

ALTER FUNCTION taskledger_create_timeline(text) RENAME TO taskledger_create_timeline_tables;
CREATE FUNCTION taskledger_create_timeline(schema_name text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM taskledger_create_timeline_tables(schema_name);
    PERFORM taskledger_partition_checkpoint(schema_name);
END
$fn$;
