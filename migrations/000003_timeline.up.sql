-- The timeline projection: every stored event of each task, in stream
-- order, with its headers and raw body: the audit trail behind every
-- completion answer. Like the policy projections it lives in a schema of
-- its own with its checkpoint, and a rebuild creates a shadow copy with
-- this same function.
CREATE FUNCTION taskledger_create_timeline(schema_name text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', schema_name);

    EXECUTE format($$CREATE TABLE %I.checkpoint (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        last_seq   bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now())$$, schema_name);
    EXECUTE format('INSERT INTO %I.checkpoint DEFAULT VALUES', schema_name);

    -- One row per distinct event: a re-send (same dedup key, same body)
    -- appended again after the duplicate window is left out, while a key
    -- reused with a different body is kept, since it is another event.
    EXECUTE format($$CREATE TABLE %I.events (
        stream_seq  bigint PRIMARY KEY,
        task_id     text NOT NULL,
        event       text NOT NULL,
        source      text NOT NULL,
        dedup_key   text NOT NULL,
        body_digest text NOT NULL,
        event_id    text,
        external_id text,
        received_at timestamptz,
        headers     json NOT NULL, -- json, not jsonb: it keeps any header value, even a NUL
        body        bytea NOT NULL)$$, schema_name);
    EXECUTE format('CREATE UNIQUE INDEX ON %I.events (dedup_key, body_digest)', schema_name);
    EXECUTE format('CREATE INDEX ON %I.events (task_id, stream_seq)', schema_name);
    EXECUTE format('CREATE INDEX ON %I.events (event_id) WHERE event_id IS NOT NULL', schema_name);
    EXECUTE format('CREATE INDEX ON %I.events (external_id) WHERE external_id IS NOT NULL', schema_name);
END
$fn$;

SELECT taskledger_create_timeline('timeline');
