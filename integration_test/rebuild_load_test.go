package integration_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestRebuildsUnderSteadyTrafficSwapAndMatchTheModel rebuilds every
// projection, the key stage first, one after the other while webhooks keep
// arriving at a steady rate and queries keep asking: webhooks must arrive
// during every rebuild, every rebuild must finish and swap, no transaction
// may be aborted by a deadlock, every query must answer, and every
// projection must end equal to what was sent.
func TestRebuildsUnderSteadyTrafficSwapAndMatchTheModel(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	// Far more than can be sent while the rebuilds run (one every 2 ms),
	// so that traffic never ends before the last swap.
	bodies, _ := shuffledCompletions("load", 50, 400, 11)
	// Some history before the first rebuild, projected before the queries
	// start asking for it.
	b.ingest(t, bodies[:1000])
	b.waitApplied(t, b.lastSeq(t))

	ctx, stop := context.WithCancel(context.Background())
	var sent atomic.Int64
	sent.Store(1000)
	var failures []string
	var mu sync.Mutex
	fail := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, what)
	}
	var traffic sync.WaitGroup
	traffic.Go(func() { // webhooks, one every 2 ms
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := int(sent.Load()); i < len(bodies) && ctx.Err() == nil; i++ {
			<-tick.C
			if r := b.post(t, "tallyfy", bodies[i]); r.Status != http.StatusAccepted {
				fail("webhook answered " + http.StatusText(r.Status))
			}
			sent.Add(1)
		}
	})
	traffic.Go(func() { // queries, back to back
		for ctx.Err() == nil {
			for _, p := range projections.All {
				if status := getStatus(t, b.url+"/v1/tasks/load-07/completions?policy="+string(p.Policy)); status != http.StatusOK {
					fail("query answered " + http.StatusText(status))
				}
			}
		}
	})

	for _, p := range projections.Every {
		before := sent.Load()
		rb, err := b.svc.StartRebuild(context.Background(), p)
		if err != nil {
			t.Fatalf("start rebuild of %s: %v", p.Name, err)
		}
		if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
			t.Errorf("rebuild of %s under traffic: %v", p.Name, err)
		}
		if v := b.projectionView(t, p.Name); v.Rebuild == nil || v.Rebuild.Outcome != "finished" {
			t.Errorf("%s after its rebuild: %+v", p.Name, v)
		}
		if after := sent.Load(); after == before {
			t.Errorf("no webhook arrived while %s was rebuilt", p.Name)
		}
	}
	if n := sent.Load(); n >= int64(len(bodies)) {
		t.Errorf("all %d webhooks were sent before the last rebuild swapped: it ran without traffic", n)
	}
	stop()
	traffic.Wait()
	for _, f := range failures {
		t.Error(f)
	}

	want := ledger{}
	for _, body := range bodies[:sent.Load()] {
		task, at := completionFields(t, body)
		want[task] = append(want[task], at)
	}
	b.checkProjectedExactlyOnce(t, want)
	b.checkFirstAndLatest(t, want)
	if rows := testenv.Rows(t, b.svc.Pool(), "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"); rows[0][0] != int64(0) {
		t.Errorf("%v deadlocks in the test's database", rows[0][0])
	}
}

// checkFirstAndLatest compares completions_first and completions_latest
// with the model: per task, the completion with the lowest and the highest
// (completed_at, stream_seq), as completions_all holds it. Reopens would
// change neither (they only mark the task reopened); want holds none, and
// its times are distinct per task, so completed_at alone decides.
func (b *bundle) checkFirstAndLatest(t *testing.T, want ledger) {
	t.Helper()
	all := map[string]int64{} // "task completed_at" -> stream_seq
	for _, r := range testenv.Rows(t, b.svc.Pool(), "SELECT task_id, completed_at, stream_seq FROM completions_all.completions") {
		all[r[0].(string)+" "+r[1].(time.Time).UTC().Format(time.RFC3339)] = r[2].(int64)
	}
	for _, p := range []projections.Projection{projections.ForPolicy(domain.PolicyFirst), projections.ForPolicy(domain.PolicyLatest)} {
		got := map[string]string{}
		for _, r := range testenv.Rows(t, b.svc.Pool(), "SELECT task_id, completed_at, stream_seq FROM "+p.Name+".completions") {
			at := r[1].(time.Time).UTC().Format(time.RFC3339)
			got[r[0].(string)] = at
			if seq, ok := all[r[0].(string)+" "+at]; !ok || seq != r[2].(int64) {
				t.Errorf("%s holds %s %s at seq %d; completions_all has it at %d (found %v)", p.Name, r[0], at, r[2], seq, ok)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s holds %d tasks, want %d", p.Name, len(got), len(want))
		}
		for task := range want {
			times := want.times(task)
			w := times[0]
			if p.Policy == domain.PolicyLatest {
				w = times[len(times)-1]
			}
			if got[task] != w {
				t.Errorf("%s of %s: %q, want %q", p.Name, task, got[task], w)
			}
		}
	}
}

// completionFields reads the task and completion time of a completion body.
func completionFields(t *testing.T, body string) (task, at string) {
	var ev struct {
		TaskID      string `json:"task_id"`
		CompletedAt string `json:"completed_at"`
	}
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatal(err)
	}
	return ev.TaskID, ev.CompletedAt
}

// TestRebuildAfterKeysExpiredDecidesAsLiveDid: with a short retention, a
// key reused within it is a dead letter and past it a new event; after the
// live key stage has forgotten the first use, rebuilding the key stage and
// every policy gives exactly the live tables and dead letters again.
func TestRebuildAfterKeysExpiredDecidesAsLiveDid(t *testing.T) {
	t.Parallel()
	const window, retention = time.Second, 2 * time.Second
	b := setupRunning(t, func(c *config.Config) { c.DuplicateWindow, c.DedupRetention = window, retention })
	post := func(at string) reply {
		return b.post(t, "tallyfy", completion("expiry", at), "Idempotency-Key", "reused-key")
	}
	first := post("2024-01-01T00:00:00Z")
	if first.Status != http.StatusAccepted {
		t.Fatalf("first use: %+v", first)
	}
	b.waitCaughtUp(t)
	afterTheWindow(window)
	if r := post("2024-01-02T00:00:00Z"); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("reuse within the retention: %+v, want 422", r)
	}
	// The same reuse stored anyway (as when Postgres cannot answer): a
	// dead letter in every policy.
	b.resend(t, first.DedupKey, completion("expiry", "2024-01-02T00:00:00Z"))
	time.Sleep(retention) // past the retention of the first use
	var late reply
	eventually(t, "the key to be forgotten", func() bool {
		late = post("2024-01-03T00:00:00Z")
		return late.Status == http.StatusAccepted
	})
	b.waitCaughtUp(t)

	snapshot := func() [][][]any {
		var out [][][]any
		for _, p := range append([]projections.Projection{projections.EventKeys}, projections.All...) {
			out = append(out, b.snapshot(t, p)...)
		}
		return append(out, testenv.Rows(t, b.svc.Pool(), "SELECT projection, stream_seq, reason FROM dead_letters ORDER BY id"))
	}
	live := snapshot()
	for _, p := range append([]projections.Projection{projections.EventKeys}, projections.All...) {
		rb, err := b.svc.StartRebuild(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
			t.Fatal(err)
		}
	}
	if rebuilt := snapshot(); !reflect.DeepEqual(rebuilt, live) {
		t.Errorf("rebuilt\n%v\nlive\n%v", rebuilt, live)
	}
	if h := b.history(t, "expiry", "all"); len(completionTimes(h)) != 2 {
		t.Errorf("history %v, want the first use and the use past the retention", completionTimes(h))
	}
}
