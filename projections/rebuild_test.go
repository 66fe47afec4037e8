package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestSwapWithALiveWriterWaitingDoesNotDeadlock replays, step by step, the
// interleaving that used to deadlock: the swap takes the live checkpoint,
// a live batch starts and waits for it, then the swap drops the old tables.
// Both must succeed, the live batch on the new tables.
func TestSwapWithALiveWriterWaitingDoesNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.NewMigratedPool(t)
	p := projections.All[0]
	if err := p.PrepareShadow(ctx, pool, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE "+p.ShadowSchema()+".checkpoint SET last_seq = 7"); err != nil {
		t.Fatal(err)
	}

	swap, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Rollback(ctx)
	if _, err := p.LockLive(ctx, swap); err != nil {
		t.Fatal(err)
	}

	writer, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Release()
	var writerPID int
	if err := writer.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&writerPID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		checkpoint uint64
		err        error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = pgx.BeginFunc(ctx, writer, func(tx pgx.Tx) (err error) {
			r.checkpoint, err = projections.LockCheckpoint(ctx, tx, p.Name)
			return err
		})
		done <- r
	}()
	// Wait until the live writer is queued behind the swap.
	testenv.Poll(t, 10*time.Second, "the live writer to wait for the swap's lock", func() bool {
		var waiting bool
		if err := pool.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
			writerPID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})

	if err := p.SwapShadow(ctx, swap); err != nil {
		t.Fatalf("swap with a live writer waiting: %v", err)
	}
	if err := swap.Commit(ctx); err != nil {
		t.Fatalf("commit the swap: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("live writer queued behind the swap: %v", r.err)
	}
	if r.checkpoint != 7 {
		t.Errorf("live writer read checkpoint %d after the swap, want the rebuilt one, 7", r.checkpoint)
	}
}
