package projections_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestOnePartitionAheadOfTheStreamIsNoticed: the lowest partition may be
// behind the stream while another is ahead of it; the stream check and the
// lag both go by the furthest.
func TestOnePartitionAheadOfTheStreamIsNoticed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.NewMigratedPool(t)
	const name = "completions_all"
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := projections.EnsurePartitions(ctx, tx, name, 4); err != nil {
			return err
		}
		return projections.SetPartition(ctx, tx, name, 2, 12)
	})
	if err != nil {
		t.Fatal(err)
	}
	stream := projections.StreamIdentity{Name: "TASK_EVENTS", Created: time.Now()}
	at := func(last uint64) projections.StreamPosition {
		return func(context.Context) (projections.StreamIdentity, uint64, error) { return stream, last, nil }
	}
	var mismatch *projections.StreamMismatchError
	if err := projections.VerifyStream(ctx, pool, at(5)); !errors.As(err, &mismatch) || mismatch.Checkpoint != 12 {
		t.Errorf("a partition at 12 over a stream ending at 5: %v, want a mismatch reaching 12", err)
	}
	if lag, err := projections.Lag(ctx, pool, 5); err != nil || lag != 12 {
		t.Errorf("Lag with a partition at 12 over a stream ending at 5: %d, %v; want 12", lag, err)
	}
	if err := projections.VerifyStream(ctx, pool, at(12)); err != nil {
		t.Errorf("the stream reaching the furthest partition: %v", err)
	}
	if lag, err := projections.Lag(ctx, pool, 12); err != nil || lag != 12 {
		t.Errorf("Lag with partitions at 0 and 12 of a stream ending at 12: %d, %v; want 12 (the lowest's)", lag, err)
	}
}

// TestMissingStream: a stream that does not exist is a mismatch only for a
// database that follows one.
func TestMissingStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.NewMigratedPool(t)
	if mismatch, err := projections.MissingStream(ctx, pool, "TASK_EVENTS"); mismatch != nil || err != nil {
		t.Errorf("a database that follows no stream: %v, %v", mismatch, err)
	}
	followed := projections.StreamIdentity{Name: "TASK_EVENTS", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := projections.AdoptStream(ctx, pool, followed); err != nil {
		t.Fatal(err)
	}
	mismatch, err := projections.MissingStream(ctx, pool, "TASK_EVENTS")
	if err != nil || mismatch == nil || !mismatch.Recorded.Created.Equal(followed.Created) ||
		mismatch.Error() != "the database follows stream TASK_EVENTS created 2026-01-02T03:04:05Z (checkpoints up to 0), "+
			"but there is no stream TASK_EVENTS here: a wiped data directory, another NATS server or another stream name. "+
			"Either point taskledger at the stream the database follows, or rebuild every projection from this stream "+
			"and make the database follow it" {
		t.Errorf("a database that follows a stream that is not there: %v, %v", mismatch, err)
	}
}
