-- The progress of each projection's latest rebuild. Whether one is running
-- now is told by its advisory lock, not by this table, so a rebuild killed
-- half-way never looks alive.
CREATE TABLE projection_rebuilds (
    projection  text PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    applied_seq bigint NOT NULL DEFAULT 0,
    target_seq  bigint NOT NULL DEFAULT 0,
    finished_at timestamptz
);
