package integration_test

import (
	"maps"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestKilledRebuildLeavesLiveTablesAndNextRebuildIsClean rebuilds
// completions_all in a taskledger serve process and SIGKILLs the process
// while the replay is part-way into the shadow schema. The live tables
// must be exactly as before; once restarted, the process reports the
// rebuild as interrupted, a new rebuild finishes and swaps in tables equal
// to the old ones, and events sent afterwards are projected exactly once.
func TestKilledRebuildLeavesLiveTablesAndNextRebuildIsClean(t *testing.T) {
	t.Parallel()
	// b reads the database; its in-process service runs no consumers. The
	// API under test is the process's.
	b := setup(t, nil)
	proc := startReplicaProcess(t, "taskledger", b.cfg)
	b.url = proc.url
	p := projections.ForPolicy(domain.PolicyAll)

	// A rebuild reads up to 5000 events a batch and swaps once the stream's
	// end is within a batch: far more events than that leave time to see
	// it part-way.
	bodies, want := shuffledCompletions("killed", 100, 200, 21)
	began := time.Now()
	b.ingest(t, bodies)
	b.waitApplied(t, b.lastSeq(t))
	t.Logf("%d events ingested and projected in %v", len(bodies), time.Since(began).Round(time.Millisecond))
	before := b.snapshot(t, p)

	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusAccepted {
		t.Fatalf("start rebuild: %+v", r)
	}
	var seen projectionDetail
	eventually(t, "the rebuild to be running with events applied", func() bool {
		seen = b.projectionView(t, p.Name)
		if rb := seen.Rebuild; rb != nil && rb.Outcome != "running" {
			t.Fatalf("the rebuild ended before it could be killed: %+v", *rb)
		}
		return seen.Rebuild != nil && seen.Rebuild.AppliedSeq > 0
	})
	proc.Kill()
	t.Logf("killed with %d of %d applied", seen.Rebuild.AppliedSeq, seen.Rebuild.TargetSeq)
	if seen.Rebuild.AppliedSeq >= seen.Rebuild.TargetSeq {
		t.Fatalf("killed after the replay reached its target: %+v", *seen.Rebuild)
	}

	if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
		t.Fatal("a rebuild killed part-way changed the live tables")
	}
	shadow := testenv.Rows(t, b.svc.Pool(), "SELECT count(*) FROM pg_namespace WHERE nspname = $1", p.ShadowSchema())
	t.Logf("shadow schema %s left behind: %v", p.ShadowSchema(), shadow[0][0] == int64(1))

	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	proc.waitReady(t)
	// The killed process's session, and with it the rebuild lock, is gone
	// once Postgres notices the closed connection.
	eventually(t, "the killed rebuild to show as interrupted", func() bool {
		v := b.projectionView(t, p.Name)
		return v.State == "live" && v.Rebuild != nil && v.Rebuild.Outcome == "interrupted"
	})
	if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
		t.Fatal("the restart changed the live tables")
	}

	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusAccepted {
		t.Fatalf("start the second rebuild: %+v", r)
	}
	eventually(t, "the second rebuild to finish", func() bool {
		v := b.projectionView(t, p.Name)
		if v.Rebuild != nil && v.Rebuild.Outcome == "failed" {
			t.Fatalf("the second rebuild failed: %+v", *v.Rebuild)
		}
		return v.State == "live" && v.Rebuild != nil && v.Rebuild.Outcome == "finished"
	})
	if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
		t.Error("the rebuild after the kill differs from the live tables it replaced")
	}
	if rows := testenv.Rows(t, b.svc.Pool(), "SELECT nspname FROM pg_namespace WHERE nspname IN ($1, $2)",
		p.ShadowSchema(), p.Name+"_retired"); len(rows) != 0 {
		t.Errorf("leftover schemas %v", rows)
	}

	// The live consumer goes on with the swapped-in tables.
	later, more := shuffledCompletions("after-kill", 20, 20, 22)
	b.ingest(t, later)
	maps.Copy(want, more)
	b.checkProjectedExactlyOnce(t, want)
}
