package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// A projection's checkpoint has one row per partition: the last stream
// sequence up to which every event of that partition is applied. With one
// partition it is the plain last applied sequence.

// LockPartition reads partition p's checkpoint of the projection in schema
// and locks it until tx ends. A partition's worker takes this lock first
// in every batch.
func LockPartition(ctx context.Context, tx DB, schema string, p int) (uint64, error) {
	var seq int64
	err := tx.QueryRow(ctx, "SELECT last_seq FROM "+table(schema, "checkpoint")+" WHERE partition = $1 FOR UPDATE", p).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%s has no partition %d: %w", schema, p, ErrPartitionsChanged)
	}
	if err != nil {
		return 0, fmt.Errorf("lock checkpoint of %s partition %d: %w", schema, p, err)
	}
	return uint64(seq), nil
}

// SetPartition moves partition p's checkpoint forward to seq (never back).
func SetPartition(ctx context.Context, tx DB, schema string, p int, seq uint64) error {
	_, err := tx.Exec(ctx, "UPDATE "+table(schema, "checkpoint")+
		" SET last_seq = $1, updated_at = now() WHERE partition = $2 AND last_seq < $1", int64(seq), p)
	if err != nil {
		return fmt.Errorf("set checkpoint of %s partition %d: %w", schema, p, err)
	}
	return nil
}

// LockCheckpoint locks every partition's checkpoint of the projection in
// schema until tx ends, and returns the furthest: writers that touch the
// whole projection (dead-letter retries) take it first, so they are
// serialized with every partition's batches.
func LockCheckpoint(ctx context.Context, tx DB, schema string) (uint64, error) {
	var seq int64
	err := tx.QueryRow(ctx, "SELECT max(last_seq) FROM (SELECT last_seq FROM "+table(schema, "checkpoint")+" FOR UPDATE) c").Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("lock checkpoint of %s: %w", schema, err)
	}
	return uint64(seq), nil
}

// SetCheckpoint moves every partition's checkpoint forward to seq (never
// back): all events up to seq are applied.
func SetCheckpoint(ctx context.Context, tx DB, schema string, seq uint64) error {
	_, err := tx.Exec(ctx, "UPDATE "+table(schema, "checkpoint")+
		" SET last_seq = $1, updated_at = now() WHERE last_seq < $1", int64(seq))
	if err != nil {
		return fmt.Errorf("set checkpoint of %s: %w", schema, err)
	}
	return nil
}

// Checkpoint reads, without locking, the sequence up to which every event
// is applied: the lowest partition checkpoint.
func Checkpoint(ctx context.Context, db DB, schema string) (uint64, error) {
	var seq int64
	if err := db.QueryRow(ctx, "SELECT min(last_seq) FROM "+table(schema, "checkpoint")).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", schema, err)
	}
	return uint64(seq), nil
}

// FurthestCheckpoint reads, without locking, the highest partition
// checkpoint: how far any partition has applied.
func FurthestCheckpoint(ctx context.Context, db DB, schema string) (uint64, error) {
	var seq int64
	if err := db.QueryRow(ctx, "SELECT max(last_seq) FROM "+table(schema, "checkpoint")).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", schema, err)
	}
	return uint64(seq), nil
}

// PartitionCheckpoint is one partition's checkpoint.
type PartitionCheckpoint struct {
	Partition int
	LastSeq   uint64
	UpdatedAt time.Time
}

// Partitions reads every partition's checkpoint, in partition order.
func Partitions(ctx context.Context, db DB, schema string) ([]PartitionCheckpoint, error) {
	rows, err := db.Query(ctx, "SELECT partition, last_seq, updated_at FROM "+table(schema, "checkpoint")+" ORDER BY partition")
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", schema, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartitionCheckpoint, error) {
		var c PartitionCheckpoint
		var seq int64
		err := r.Scan(&c.Partition, &seq, &c.UpdatedAt)
		c.LastSeq = uint64(seq)
		return c, err
	})
}

// ErrPartitionsChanged is returned when a projection's checkpoints were
// kept for another partition count than the one configured.
var ErrPartitionsChanged = errors.New("the projection's partition count differs")

// PartitionsChangedError says a projection that has applied events keeps
// another partition count than the one configured; only a rebuild of it
// may change the count. It is ErrPartitionsChanged.
type PartitionsChangedError struct {
	Projection       string
	Kept, Configured int
}

func (e *PartitionsChangedError) Error() string {
	return fmt.Sprintf("%s: %s has %d partition(s) and %d are configured; changing the count needs a rebuild",
		ErrPartitionsChanged, e.Projection, e.Kept, e.Configured)
}

// Is makes a *PartitionsChangedError match ErrPartitionsChanged.
func (e *PartitionsChangedError) Is(target error) bool { return target == ErrPartitionsChanged }

// EnsurePartitions makes the projection in schema keep n partition
// checkpoints, in tx. A projection that has applied nothing yet is split
// freely; one that has is refused with a *PartitionsChangedError, as only a
// rebuild (which applies everything again) may change its count.
func EnsurePartitions(ctx context.Context, tx DB, schema string, n int) error {
	furthest, err := LockCheckpoint(ctx, tx, schema) // concurrent replicas wait here
	if err != nil {
		return err
	}
	cps, err := Partitions(ctx, tx, schema)
	if err != nil || len(cps) == n {
		return err
	}
	if furthest > 0 {
		return &PartitionsChangedError{Projection: schema, Kept: len(cps), Configured: n}
	}
	return SplitCheckpoint(ctx, tx, schema, n)
}

// SplitCheckpoint replaces the checkpoints of schema, in tx, by n
// partitions at sequence 0.
func SplitCheckpoint(ctx context.Context, tx DB, schema string, n int) error {
	if _, err := tx.Exec(ctx, "DELETE FROM "+table(schema, "checkpoint")); err != nil {
		return fmt.Errorf("split checkpoint of %s: %w", schema, err)
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+table(schema, "checkpoint")+
		" (partition) SELECT generate_series(0, $1::int - 1)", n)
	if err != nil {
		return fmt.Errorf("split checkpoint of %s into %d partitions: %w", schema, n, err)
	}
	return nil
}

// Behind is how many stream sequences a checkpoint is behind the stream's
// last one; 0 when it is at or past it.
func Behind(checkpoint, last uint64) uint64 { return last - min(checkpoint, last) }

// OffStream is the lag to report for a projection whose checkpoints do not
// count in the stream ending at last: one ahead of it (a reset stream) or
// one that follows another stream, with furthest its highest checkpoint.
// It is the larger of the two, so never 0 unless both are: every event of
// this stream is unapplied, and a checkpoint ahead is at least that far off.
func OffStream(furthest, last uint64) uint64 { return max(furthest, last) }

// Lag is how far the projection furthest from the stream's last sequence
// is from it: how many events the slowest is behind, or, for one with a
// partition ahead of the stream, OffStream. It is 0 only when every
// projection is at last.
func Lag(ctx context.Context, db DB, last uint64) (uint64, error) {
	var lag uint64
	for _, p := range Every {
		cps, err := Partitions(ctx, db, p.Name)
		if err != nil {
			return 0, err
		}
		lowest, furthest := last, uint64(0)
		for _, c := range cps {
			lowest, furthest = min(lowest, c.LastSeq), max(furthest, c.LastSeq)
		}
		if furthest > last {
			lag = max(lag, OffStream(furthest, last))
		} else {
			lag = max(lag, Behind(lowest, last))
		}
	}
	return lag, nil
}
