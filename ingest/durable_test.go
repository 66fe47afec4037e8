package ingest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestConcurrentLookupsShareOneQuery queues lookups before the tier's
// workers start: they must be answered, rightly, by at most one query per
// worker.
func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	ctx := context.Background()
	stored := time.Now().Add(-time.Hour)
	for i := range 50 {
		if _, err := pool.Exec(ctx, `INSERT INTO event_keys.keys VALUES ($1, $2, $3, $4)`,
			fmt.Sprintf("s:k%d", i), i+1, fmt.Sprintf("digest%d", i), stored); err != nil {
			t.Fatal(err)
		}
	}
	tier := NewDurableTier(pool, DurableOptions{Retention: 24 * time.Hour, Timeout: time.Minute}, zerolog.Nop())
	const lookups = 100 // half known, half not
	var wg sync.WaitGroup
	results := make([]projections.Original, lookups)
	found := make([]bool, lookups)
	for i := range lookups {
		wg.Go(func() { results[i], found[i] = tier.Recall(ctx, fmt.Sprintf("s:k%d", i)) })
	}
	testenv.Poll(t, 10*time.Second, "every lookup to be queued", func() bool { return len(tier.requests) == lookups })
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go tier.Run(runCtx)
	wg.Wait()
	for i := range lookups {
		if found[i] != (i < 50) || (found[i] && (results[i].Seq != uint64(i+1) || results[i].Digest != fmt.Sprintf("digest%d", i))) {
			t.Errorf("lookup %d: %+v, %v", i, results[i], found[i])
		}
	}
	if q := tier.queries.Load(); q > int64(tier.opts.Workers) {
		t.Errorf("%d queries for %d concurrent lookups, want at most one per worker (%d)", q, lookups, tier.opts.Workers)
	}
}

// TestUnreachableDatabaseIsAMissAndThenSkipped: a failing lookup answers
// "unknown" (the event is then appended), and the tier stops asking for a
// while rather than make every request wait.
func TestUnreachableDatabaseIsAMissAndThenSkipped(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tier := NewDurableTier(pool, DurableOptions{Retention: time.Hour, Timeout: 5 * time.Second}, zerolog.Nop())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go tier.Run(ctx)
	if _, ok := tier.Recall(ctx, "s:k"); ok {
		t.Fatal("an unreachable database answered a lookup")
	}
	if !tier.failing.Load() {
		t.Fatal("the failure was not noticed")
	}
	before := tier.queries.Load()
	if _, ok := tier.Recall(ctx, "s:k"); ok || tier.queries.Load() != before {
		t.Errorf("a lookup right after a failure queried again (%d queries before, %d after)", before, tier.queries.Load())
	}
}
