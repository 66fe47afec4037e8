package projections

import (
	"context"
	"fmt"
	"time"
)

// LockCheckpoint reads the checkpoint of the projection in schema and locks
// it until tx ends. Every writer takes this lock first, so batches, dead
// letter retries and the rebuild swap are serialized per projection.
func LockCheckpoint(ctx context.Context, tx DB, schema string) (uint64, error) {
	var seq int64
	err := tx.QueryRow(ctx, "SELECT last_seq FROM "+table(schema, "checkpoint")+" FOR UPDATE").Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("lock checkpoint of %s: %w", schema, err)
	}
	return uint64(seq), nil
}

// SetCheckpoint moves the checkpoint forward to seq (never back).
func SetCheckpoint(ctx context.Context, tx DB, schema string, seq uint64) error {
	_, err := tx.Exec(ctx, "UPDATE "+table(schema, "checkpoint")+
		" SET last_seq = $1, updated_at = now() WHERE last_seq < $1", int64(seq))
	if err != nil {
		return fmt.Errorf("set checkpoint of %s: %w", schema, err)
	}
	return nil
}

// Checkpoint reads the checkpoint without locking it.
func Checkpoint(ctx context.Context, db DB, schema string) (uint64, error) {
	var seq int64
	if err := db.QueryRow(ctx, "SELECT last_seq FROM "+table(schema, "checkpoint")).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", schema, err)
	}
	return uint64(seq), nil
}

// SweepSeenKeys forgets dedup keys seen longer ago than retention: past it,
// a duplicate is caught only by the read models' natural keys.
func SweepSeenKeys(ctx context.Context, db DB, schema string, retention time.Duration) error {
	_, err := db.Exec(ctx, "DELETE FROM "+table(schema, "seen_keys")+" WHERE seen_at < now() - $1::interval", retention)
	if err != nil {
		return fmt.Errorf("sweep seen keys of %s: %w", schema, err)
	}
	return nil
}

// Behind is how many stream sequences a checkpoint is behind the stream's
// last one.
func Behind(checkpoint, last uint64) uint64 { return last - min(checkpoint, last) }

// Lag is how far the slowest projection is behind the stream's last
// sequence.
func Lag(ctx context.Context, db DB, last uint64) (uint64, error) {
	var lag uint64
	for _, p := range Every {
		cp, err := Checkpoint(ctx, db, p.Name)
		if err != nil {
			return 0, err
		}
		lag = max(lag, Behind(cp, last))
	}
	return lag, nil
}
