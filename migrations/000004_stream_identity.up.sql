-- The stream incarnation the projections follow: checkpoints are positions
-- in it and mean nothing in another. Name and creation time tell a wiped
-- data directory, another NATS server or another stream name apart.
CREATE TABLE stream_identity (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    stream_name    text NOT NULL,
    stream_created timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- The outcome of each projection's latest rebuild, beside its progress.
ALTER TABLE projection_rebuilds ADD COLUMN failed_at timestamptz, ADD COLUMN error text;
