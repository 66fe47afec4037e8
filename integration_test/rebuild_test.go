package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/loadgen"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

const adminToken = "test-admin-token"

// ingest posts bodies from several concurrent senders and fails on any
// answer other than 202 or 200.
func (b *bundle) ingest(t *testing.T, bodies []string) {
	t.Helper()
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for body := range work {
				if r := b.post(t, "tallyfy", body); r.Status != http.StatusAccepted && r.Status != http.StatusOK {
					t.Errorf("ingest %s: %+v", body, r)
				}
			}
		})
	}
	for _, body := range bodies {
		work <- body
	}
	close(work)
	wg.Wait()
}

// waitCaughtUp waits until every projection has applied the whole stream.
func (b *bundle) waitCaughtUp(t *testing.T) {
	t.Helper()
	if _, err := loadgen.WaitCaughtUp(context.Background(), b.svc.Lag, waitLimit); err != nil {
		t.Fatal(err)
	}
}

// snapshot is a projection's tables and checkpoint, row for row.
func (b *bundle) snapshot(t *testing.T, p projections.Projection) [][][]any {
	t.Helper()
	tables := []string{"completions ORDER BY task_id, completed_at"}
	switch {
	case p.IsTimeline():
		tables = []string{"events ORDER BY stream_seq", "task_state ORDER BY task_id"}
	case p.Keys:
		tables = []string{"keys ORDER BY dedup_key", "repeats ORDER BY stream_seq"}
	}
	out := [][][]any{testenv.Rows(t, b.svc.Pool(), "SELECT last_seq FROM "+p.Name+".checkpoint")}
	for _, table := range tables {
		out = append(out, testenv.Rows(t, b.svc.Pool(), "SELECT * FROM "+p.Name+"."+table))
	}
	return out
}

func (b *bundle) adminPost(t *testing.T, path, token string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

// projectionState reads the state of one projection from GET /v1/projections.
func (b *bundle) projectionState(t *testing.T, name string) string {
	t.Helper()
	var body struct {
		Projections []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"projections"`
	}
	getJSON(t, b.url+"/v1/projections", &body)
	for _, p := range body.Projections {
		if p.Name == name {
			return p.State
		}
	}
	t.Fatalf("projection %s not listed", name)
	return ""
}

// indexes lists the definitions of the indexes in schema.
func (b *bundle) indexes(t *testing.T, schema string) []string {
	t.Helper()
	var defs []string
	for _, r := range testenv.Rows(t, b.svc.Pool(), "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexdef", schema) {
		defs = append(defs, r[0].(string))
	}
	return defs
}

func TestRebuildMatchesLiveTablesWhileQueriesKeepAnswering(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	b.svc.Start()
	traffic := loadgen.Generate(10_000, 1)
	b.ingest(t, traffic.Bodies)
	tasks := traffic.Tasks
	b.waitCaughtUp(t)

	for _, p := range projections.All {
		before, indexesBefore := b.snapshot(t, p), b.indexes(t, p.Name)
		// Query every known task while the rebuild runs: none may vanish.
		answered := map[string]bool{}
		for _, task := range tasks {
			r := getStatus(t, b.url+"/v1/tasks/"+task+"/completions?policy="+string(p.Policy))
			answered[task] = r == http.StatusOK
		}
		if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusAccepted {
			t.Fatalf("start rebuild of %s: %+v", p.Name, r)
		}
		sawRebuilding := false
		for round := 0; ; round++ {
			state := b.projectionState(t, p.Name)
			sawRebuilding = sawRebuilding || state == "rebuilding"
			for _, task := range tasks {
				if got := getStatus(t, b.url+"/v1/tasks/"+task+"/completions?policy="+string(p.Policy)); (got == http.StatusOK) != answered[task] {
					t.Fatalf("%s during the rebuild of %s: status %d", task, p.Name, got)
				}
			}
			if state == "live" && round > 0 {
				break
			}
			if round > 500 {
				t.Fatalf("rebuild of %s did not finish", p.Name)
			}
		}
		if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
			t.Errorf("rebuilt %s differs from the live tables it replaced", p.Name)
		}
		if after := b.indexes(t, p.Name); !reflect.DeepEqual(after, indexesBefore) {
			t.Errorf("rebuilt %s has indexes %v, want %v", p.Name, after, indexesBefore)
		}
		if unanalyzed := testenv.Rows(t, b.svc.Pool(), `SELECT relname FROM pg_stat_user_tables
			WHERE schemaname = $1 AND last_analyze IS NULL`, p.Name); len(unanalyzed) > 0 {
			t.Errorf("rebuilt %s swapped in tables never analyzed: %v", p.Name, unanalyzed)
		}
		if !sawRebuilding {
			t.Errorf("GET /v1/projections never showed %s rebuilding", p.Name)
		}
	}
	// The live consumers, whose sessions prepared their statements against
	// the replaced tables, keep applying to the new ones.
	b.ingest(t, []string{completion(tasks[0], "2031-01-01T00:00:00Z")})
	b.waitCaughtUp(t)
	for _, p := range projections.All {
		rows := testenv.Rows(t, b.svc.Pool(), "SELECT 1 FROM "+p.Name+".completions WHERE task_id = $1 AND completed_at >= '2031-01-01'", tasks[0])
		if want := p.Name != "completions_first"; (len(rows) == 1) != want {
			t.Errorf("%s after the swap: %d rows of the new completion", p.Name, len(rows))
		}
	}
}

// smallBatchRebuilder rebuilds b's projections 100 events at a time.
func (b *bundle) smallBatchRebuilder(t *testing.T) *consumers.Rebuilder {
	return consumers.NewRebuilder(b.svc.Pool(), b.js, consumers.ReadOptions{
		Stream: b.stream, Subjects: []string{b.allSubjects()}, MaxCount: 100, MaxBytes: 1 << 20,
		Wait: time.Second, Linger: 5 * time.Millisecond,
	}, testLogger(t))
}

func TestInterruptedRebuildLeavesLiveTablesAndRerunSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.svc.Start()
	b.ingest(t, loadgen.Generate(1_500, 2).Bodies)
	b.waitCaughtUp(t)
	p := projections.All[0]
	before := b.snapshot(t, p)

	rebuilder := b.smallBatchRebuilder(t)
	ctx, cancel := context.WithCancel(context.Background())
	rb, err := rebuilder.Start(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	batches := 0
	err = rb.Run(ctx, func(consumers.Progress) {
		if batches++; batches == 3 {
			cancel() // the process dies part-way
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rebuild returned %v", err)
	}
	if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
		t.Fatal("an interrupted rebuild changed the live tables")
	}
	if b.projectionState(t, p.Name) != "live" {
		t.Error("a dead rebuild still shows as rebuilding")
	}
	if v := b.projectionView(t, p.Name); v.Rebuild == nil || v.Rebuild.Outcome != "failed" || v.Rebuild.FailedAt == nil ||
		!strings.Contains(v.Rebuild.Error, context.Canceled.Error()) {
		t.Errorf("the interrupted rebuild's outcome: %+v, want failed with its error", v.Rebuild)
	}
	rb, err = rebuilder.Start(context.Background(), p)
	if err != nil {
		t.Fatalf("re-run refused: %v", err)
	}
	var last consumers.Progress
	if err := rb.Run(context.Background(), func(p consumers.Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	if !last.Done || last.Applied != last.Target {
		t.Errorf("final progress %+v", last)
	}
	if after := b.snapshot(t, p); !reflect.DeepEqual(after, before) {
		t.Error("the re-run rebuild differs from the live tables")
	}
	if rows := testenv.Rows(t, b.svc.Pool(), "SELECT nspname FROM pg_namespace WHERE nspname LIKE '%_rebuild' OR nspname LIKE '%_retired'"); len(rows) != 0 {
		t.Errorf("leftover schemas %v", rows)
	}
}

// TestRebuildThatFailsToStartIsRecorded: a rebuild whose preparation fails
// (here the database refuses to record its start) shows as failed with the
// error, not as the previous rebuild's finished outcome; the next rebuild
// that can start finishes.
func TestRebuildThatFailsToStartIsRecorded(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, func(c *config.Config) { c.AdminToken = adminToken })
	b.waitApplied(t, b.accept(t, completion("prepare", "2024-01-01T00:00:00Z")))
	p := projections.All[0]
	rebuild := func() {
		t.Helper()
		rb, err := b.svc.StartRebuild(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
			t.Fatal(err)
		}
		if v := b.projectionView(t, p.Name); v.Rebuild == nil || v.Rebuild.Outcome != "finished" || v.Rebuild.Error != "" {
			t.Fatalf("after a rebuild: %+v", v.Rebuild)
		}
	}
	rebuild()

	exec := func(sql string) {
		t.Helper()
		if _, err := b.svc.Pool().Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE FUNCTION refuse_rebuild_start() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'rebuild start refused by the test'; END $$`)
	exec(`CREATE TRIGGER refuse_start BEFORE INSERT OR UPDATE ON projection_rebuilds
		FOR EACH ROW WHEN (NEW.failed_at IS NULL AND NEW.finished_at IS NULL) EXECUTE FUNCTION refuse_rebuild_start()`)
	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusInternalServerError {
		t.Errorf("rebuild that cannot start: %+v, want 500", r)
	}
	v := b.projectionView(t, p.Name)
	if v.State != "live" || v.Rebuild == nil || v.Rebuild.Outcome != "failed" || v.Rebuild.FailedAt == nil ||
		v.Rebuild.FinishedAt != nil || !strings.Contains(v.Rebuild.Error, "rebuild start refused by the test") {
		t.Errorf("after a rebuild that failed to start: %+v %+v, want live with the rebuild failed and its error", v, v.Rebuild)
	}

	exec(`DROP TRIGGER refuse_start ON projection_rebuilds`)
	rebuild()
}

func TestSecondRebuildIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	p := projections.All[1]
	first, err := b.svc.Rebuilder().Start(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Rebuilder().Start(context.Background(), p); !errors.Is(err, projections.ErrRebuildRunning) {
		t.Errorf("second Start: %v, want ErrRebuildRunning", err)
	}
	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusConflict || r.Error.Code != "rebuild_running" {
		t.Errorf("second rebuild over HTTP: %+v, want 409 rebuild_running", r)
	}
	if state := b.projectionState(t, p.Name); state != "rebuilding" {
		t.Errorf("state %q while a rebuild holds the lock", state)
	}
	if err := first.Run(context.Background(), func(consumers.Progress) {}); err != nil {
		t.Fatal(err)
	}
	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusAccepted {
		t.Errorf("rebuild after the first finished: %+v", r)
	}
}

func TestRebuildRecoversDroppedAndEmptiedTables(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.svc.Start()
	traffic := loadgen.Generate(800, 3)
	b.ingest(t, traffic.Bodies)
	tasks := traffic.Tasks
	b.waitCaughtUp(t)
	first, latest := projections.ForPolicy("first"), projections.ForPolicy("latest")
	want := map[string][][][]any{first.Name: b.snapshot(t, first), latest.Name: b.snapshot(t, latest)}

	if _, err := b.svc.Pool().Exec(context.Background(), `DROP SCHEMA completions_first CASCADE;
		TRUNCATE completions_latest.completions`); err != nil {
		t.Fatal(err)
	}
	// Batches far smaller than the stream: the replay is within a batch of
	// the end well before it reaches it.
	rebuilder := b.smallBatchRebuilder(t)
	for _, p := range []projections.Projection{first, latest} {
		rb, err := rebuilder.Start(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name, err)
		}
		// A rebuild swaps once the stream's end is within a batch and the
		// shadow has reached the live checkpoint, 0 for the dropped one: its
		// live consumer applies the rest.
		b.waitCaughtUp(t)
		if got := b.snapshot(t, p); !reflect.DeepEqual(got, want[p.Name]) {
			t.Errorf("%s not recovered by the rebuild", p.Name)
		}
	}
	// The live consumer of the dropped projection resumes on the new tables.
	b.ingest(t, []string{completion(tasks[0], "2030-01-01T00:00:00Z")})
	b.waitCaughtUp(t)
	var h struct {
		Completions []struct {
			CompletedAt time.Time `json:"completed_at"`
		} `json:"completions"`
	}
	getJSON(t, b.url+"/v1/tasks/"+tasks[0]+"/completions?policy=latest", &h)
	if len(h.Completions) != 1 || h.Completions[0].CompletedAt.Year() != 2030 {
		t.Errorf("latest after the rebuild: %+v", h)
	}
}

func TestRebuildEndpointNeedsTheAdminToken(t *testing.T) {
	t.Parallel()
	closed := setup(t, func(c *config.Config) { c.AdminToken = "" })
	if r := closed.adminPost(t, "/v1/projections/completions_all/rebuild", "anything"); r.Status != http.StatusForbidden || r.Error.Code != "admin_disabled" {
		t.Errorf("without a configured token: %+v, want 403 admin_disabled", r)
	}
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	for _, tt := range []struct {
		token, path string
		status      int
		code        string
	}{
		{"", "/v1/projections/completions_all/rebuild", http.StatusUnauthorized, "unauthorized"},
		{"wrong", "/v1/projections/completions_all/rebuild", http.StatusUnauthorized, "unauthorized"},
		{adminToken, "/v1/projections/nope/rebuild", http.StatusNotFound, "projection_not_found"},
	} {
		if r := b.adminPost(t, tt.path, tt.token); r.Status != tt.status || r.Error.Code != tt.code {
			t.Errorf("token %q %s: %+v, want %d %s", tt.token, tt.path, r, tt.status, tt.code)
		}
	}
}

func TestRebuildUnderSustainedIngestCatchesUpAndSwaps(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	b.svc.Start()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	want := ledger{}
	body := func(i int) string {
		task, at := fmt.Sprintf("sustained-%02d", i%40), base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339)
		want[task] = append(want[task], at)
		return completion(task, at)
	}
	sent := 0
	send := func(n int) {
		var bodies []string
		for range n {
			bodies = append(bodies, body(sent))
			sent++
		}
		b.ingest(t, bodies)
	}
	send(2_000)
	p := projections.ForPolicy(domain.PolicyAll)
	if r := b.adminPost(t, "/v1/projections/"+p.Name+"/rebuild", adminToken); r.Status != http.StatusAccepted {
		t.Fatalf("start rebuild: %+v", r)
	}
	// Keep ingesting until the rebuild has swapped in: it must catch up with
	// a stream that keeps growing.
	for rounds := 0; b.projectionState(t, p.Name) == "rebuilding"; rounds++ {
		if rounds == 2_000 {
			t.Fatalf("the rebuild did not catch up with %d events sent", sent)
		}
		send(20)
	}
	send(20)
	t.Logf("rebuild swapped in with %d events sent", sent)
	b.checkProjectedExactlyOnce(t, want)
}
