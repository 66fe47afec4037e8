-- Each policy gets its copy of the task state back, from the timeline's.
DO $$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['completions_all', 'completions_first', 'completions_latest'] LOOP
        PERFORM taskledger_create_task_state(s);
        EXECUTE format('INSERT INTO %I.task_state SELECT * FROM timeline.task_state', s);
        EXECUTE format('UPDATE %I.checkpoint SET last_seq = LEAST(last_seq, (SELECT min(last_seq) FROM timeline.checkpoint))', s);
    END LOOP;
END
$$;
DROP TABLE timeline.task_state;

CREATE OR REPLACE FUNCTION taskledger_create_timeline(schema_name text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM taskledger_create_timeline_tables(schema_name);
    PERFORM taskledger_partition_checkpoint(schema_name);
END
$fn$;
DROP FUNCTION taskledger_create_task_state(text);

-- The definition of 000007, with the task state.
CREATE OR REPLACE FUNCTION taskledger_create_projection_tables(schema_name text, policy text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF policy NOT IN ('all', 'first', 'latest', 'keys') THEN
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

    IF policy = 'keys' THEN
        -- Per dedup key, the event that first used it within the retention:
        -- the original a re-send is answered with. stored_at is the stream's
        -- timestamp, so every decision is a function of the stream alone.
        EXECUTE format($$CREATE TABLE %I.keys (
            dedup_key   text PRIMARY KEY,
            stream_seq  bigint NOT NULL,
            body_digest text NOT NULL,
            stored_at   timestamptz NOT NULL)$$, schema_name);
        EXECUTE format('CREATE INDEX ON %I.keys (stored_at)', schema_name);
        -- Ingest's key filter reads the keys recorded since its last look.
        EXECUTE format('CREATE INDEX ON %I.keys (stream_seq)', schema_name);
        -- Stored events that repeat an original within the retention (they
        -- slipped past the ingest's tiers): exact duplicates, which the read
        -- models skip, and reused sender keys with another body, which they
        -- set aside as dead letters. Rare, kept for rebuilds.
        EXECUTE format($$CREATE TABLE %I.repeats (
            stream_seq   bigint PRIMARY KEY,
            dedup_key    text NOT NULL,
            original_seq bigint NOT NULL,
            reused       boolean NOT NULL)$$, schema_name);
        RETURN;
    END IF;

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
