DROP SCHEMA event_keys CASCADE;
DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['completions_all', 'completions_first', 'completions_latest'] LOOP
        EXECUTE format($q$CREATE TABLE %I.seen_keys (
            dedup_key  text PRIMARY KEY,
            stream_seq bigint NOT NULL,
            seen_at    timestamptz NOT NULL DEFAULT now())$q$, s);
        EXECUTE format('CREATE INDEX ON %I.seen_keys (seen_at)', s);
    END LOOP;
END
$$;
-- The definition of 000001, which gives each read model its seen_keys.
CREATE OR REPLACE FUNCTION taskledger_create_projection_tables(schema_name text, policy text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF policy NOT IN ('all', 'first', 'latest') THEN
        RAISE EXCEPTION 'unknown policy %', policy;
    END IF;
    EXECUTE format('CREATE SCHEMA %I', schema_name);

    -- The last applied stream sequence, written in the same transaction as
    -- the rows it covers.
    EXECUTE format($$CREATE TABLE %I.checkpoint (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        last_seq   bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now())$$, schema_name);
    EXECUTE format('INSERT INTO %I.checkpoint DEFAULT VALUES', schema_name);

    -- The durable dedup tier: keys seen after JetStream's window forgot them.
    EXECUTE format($$CREATE TABLE %I.seen_keys (
        dedup_key  text PRIMARY KEY,
        stream_seq bigint NOT NULL,
        seen_at    timestamptz NOT NULL DEFAULT now())$$, schema_name);
    EXECUTE format('CREATE INDEX ON %I.seen_keys (seen_at)', schema_name);

    -- The read model: every distinct completion for "all", one per task for
    -- "first" and "latest".
    EXECUTE format($$CREATE TABLE %I.completions (
        task_id      text NOT NULL,
        completed_at timestamptz NOT NULL,
        stream_seq   bigint NOT NULL,
        process_id   text NOT NULL,
        completed_by text NOT NULL,
        source       text NOT NULL,
        dedup_key    text NOT NULL,
        PRIMARY KEY (%s))$$, schema_name,
        CASE policy WHEN 'all' THEN 'task_id, completed_at' ELSE 'task_id' END);
    EXECUTE format('CREATE INDEX ON %I.completions (process_id, task_id)', schema_name);

    -- Per task: the latest completion and the latest reopen, to tell whether
    -- the task is reopened now whatever the policy keeps.
    EXECUTE format($$CREATE TABLE %I.task_state (
        task_id            text PRIMARY KEY,
        last_completed_at  timestamptz,
        last_completed_seq bigint,
        last_reopened_at   timestamptz,
        last_reopened_seq  bigint)$$, schema_name);
END
$fn$;
