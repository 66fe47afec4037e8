package integration_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/taskledger/taskledger/projections"
)

// TestFailingBatchesStallTheProjectionUntilItApplies: when the database
// refuses a projection's writes, its batch fails on every retry; after a
// few failures in a row GET /v1/projections shows it stalled with the
// error, the other projections go on, /readyz stays ready (it fails only
// off the stream), and once the writes are accepted again the projection
// applies the batch and is live again.
func TestFailingBatchesStallTheProjectionUntilItApplies(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	b.waitApplied(t, b.accept(t, completion("stall", "2024-01-01T00:00:00Z")))
	exec := func(sql string) {
		t.Helper()
		if _, err := b.svc.Pool().Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'writes refused by the test'; END $$`)
	exec(`CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON completions_all.completions
		FOR EACH ROW EXECUTE FUNCTION refuse_writes()`)
	seq := b.accept(t, completion("stall", "2024-01-02T00:00:00Z"))

	var v projectionDetail
	eventually(t, "completions_all to show stalled", func() bool {
		v = b.projectionView(t, "completions_all")
		return v.State == "stalled"
	})
	if !strings.Contains(v.Reason, "writes refused by the test") || !strings.Contains(v.Reason, "attempts") ||
		v.Lag == nil || *v.Lag != 1 {
		t.Errorf("stalled by failing batches: %+v, want the error as the reason and a lag of 1", v)
	}
	for _, p := range projections.Every {
		if p.Name == "completions_all" {
			continue
		}
		eventually(t, p.Name+" to apply the event", func() bool { return b.checkpoint(t, p.Name) >= seq })
		if v := b.projectionView(t, p.Name); v.State != "live" || v.Reason != "" {
			t.Errorf("%s beside the stalled projection: %+v", p.Name, v)
		}
	}
	if status := getStatus(t, b.url+"/readyz"); status != http.StatusOK {
		t.Errorf("readyz with a projection stalled by failures: %d, want 200", status)
	}

	exec(`DROP TRIGGER refuse ON completions_all.completions`)
	b.waitApplied(t, seq)
	eventually(t, "completions_all to be live again", func() bool {
		v = b.projectionView(t, "completions_all")
		return v.State == "live" && v.Reason == ""
	})
	if got := completionTimes(b.history(t, "stall", "all")); len(got) != 2 {
		t.Errorf("after the writes are accepted again: %v, want both completions", got)
	}
}
