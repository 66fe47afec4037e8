-- Each projection lives in a schema of its own holding its checkpoint, the
-- dedup keys it has seen, and its read model. A rebuild creates a shadow
-- schema with this same function and swaps it in by renaming schemas, so the
-- table definitions exist in exactly one place.
CREATE FUNCTION taskledger_create_projection(schema_name text, policy text)
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

SELECT taskledger_create_projection('completions_all', 'all');
SELECT taskledger_create_projection('completions_first', 'first');
SELECT taskledger_create_projection('completions_latest', 'latest');

-- Events a projection could not apply, kept with the reason and the raw
-- message; the checkpoint moves past them in the same transaction.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    projection      text NOT NULL,
    stream_seq      bigint NOT NULL,
    subject         text NOT NULL,
    headers         jsonb NOT NULL,
    body            bytea NOT NULL,
    reason          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    UNIQUE (projection, stream_seq)
);
