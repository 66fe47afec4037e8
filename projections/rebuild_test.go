package projections_test

import (
	"context"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/domain"
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

// TestReplayKeepsWhatApplyingKeeps replays a history, with completions that
// come back in later batches (the same task and time, the same key and
// body), into each projection's readied shadow and finishes it: the shadow
// must hold row for row what applying the same batches to the live tables
// holds, with the same indexes.
func TestReplayKeepsWhatApplyingKeeps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.NewMigratedPool(t)
	rng := rand.New(rand.NewPCG(3, 5))
	tasks := []string{"a1", "a2", "b1"}
	var history []domain.Recorded
	for seq := uint64(1); seq <= 300; seq++ {
		task, hour := tasks[rng.IntN(len(tasks))], rng.IntN(6)
		r := completed(seq, task, hour)
		switch rng.IntN(5) {
		case 0:
			r = reopened(seq, task, hour)
		case 1:
			r = history[rng.IntN(len(history))] // sent again past every window
			r.Seq = seq
		}
		history = append(history, r)
	}
	entries := make([]projections.Entry, len(history))
	for i, r := range history {
		entries[i] = projections.Entry{Message: projections.Message{Seq: r.Seq, Subject: "x.s", Body: []byte("{}")}, Record: r}
	}
	for _, p := range append(slices.Clone(projections.All), projections.Timeline) {
		if err := p.PrepareShadow(ctx, pool, 0, 1); err != nil {
			t.Fatal(err)
		}
		restores, err := p.DropShadowIndexes(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		for rest := entries; len(rest) > 0; {
			batch := rest[:min(1+rng.IntN(40), len(rest))]
			rest = rest[len(batch):]
			applyIn(t, pool, p, p.Name, batch)
			if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := p.ReplayEntries(ctx, tx, p.ShadowSchema(), batch)
				return err
			}); err != nil {
				t.Fatalf("replay into %s: %v", p.ShadowSchema(), err)
			}
		}
		if err := p.FinishShadow(ctx, pool, restores); err != nil {
			t.Fatal(err)
		}
		tables := []string{"completions ORDER BY task_id, completed_at"}
		if p.IsTimeline() {
			tables = []string{"events ORDER BY stream_seq", "task_state ORDER BY task_id"}
		}
		for _, table := range tables {
			live, replayed := testenv.Rows(t, pool, "SELECT * FROM "+p.Name+"."+table), testenv.Rows(t, pool, "SELECT * FROM "+p.ShadowSchema()+"."+table)
			if len(live) == 0 || !reflect.DeepEqual(replayed, live) {
				t.Errorf("%s.%s: %d rows replayed, %d applied, or they differ", p.Name, table, len(replayed), len(live))
			}
		}
		const indexes = "SELECT tablename, replace(indexdef, $1, '') FROM pg_indexes WHERE schemaname = $2 ORDER BY indexname"
		live, replayed := testenv.Rows(t, pool, indexes, p.Name+".", p.Name), testenv.Rows(t, pool, indexes, p.ShadowSchema()+".", p.ShadowSchema())
		if !reflect.DeepEqual(replayed, live) {
			t.Errorf("%s indexes after the replay:\n%v\nwant\n%v", p.Name, replayed, live)
		}
	}
}
