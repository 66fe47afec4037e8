package integration_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// completionView, historyView, processPage, projectionStatus and
// deadLetterView are the API's answers decoded by the field names of the
// contract, as a client would decode them.
type completionView struct {
	CompletedAt time.Time `json:"completed_at"`
	CompletedBy string    `json:"completed_by"`
	ProcessID   string    `json:"process_id"`
	DedupKey    string    `json:"dedup_key"`
	StreamSeq   uint64    `json:"stream_seq"`
}

type historyView struct {
	TaskID      string           `json:"task_id"`
	Policy      string           `json:"policy"`
	Reopened    bool             `json:"reopened"`
	Completions []completionView `json:"completions"`
}

type processPage struct {
	ProcessID  string        `json:"process_id"`
	Policy     string        `json:"policy"`
	Tasks      []historyView `json:"tasks"`
	NextCursor string        `json:"next_cursor"`
}

type projectionStatus struct {
	Name          string `json:"name"`
	Policy        string `json:"policy"`
	Checkpoint    uint64 `json:"checkpoint"`
	StreamLastSeq uint64 `json:"stream_last_seq"`
	Lag           uint64 `json:"lag"`
	State         string `json:"state"`
}

type deadLetterView struct {
	ID         int64           `json:"id"`
	Projection string          `json:"projection"`
	StreamSeq  uint64          `json:"stream_seq"`
	Reason     string          `json:"reason"`
	Attempts   int             `json:"attempts"`
	ResolvedAt *time.Time      `json:"resolved_at"`
	Body       json.RawMessage `json:"body"`
}

// history reads task's completion history under policy; it must exist.
func (b *bundle) history(t *testing.T, task string, policy domain.Policy) historyView {
	t.Helper()
	var h historyView
	getJSON(t, b.url+"/v1/tasks/"+url.PathEscape(task)+"/completions?policy="+string(policy), &h)
	return h
}

// completionTimes lists h's completion times in RFC 3339, in answer order.
func completionTimes(h historyView) []string {
	var out []string
	for _, c := range h.Completions {
		out = append(out, c.CompletedAt.UTC().Format(time.RFC3339))
	}
	return out
}

// checkHistory checks task's history under every policy against the
// distinct completion times it was given, in ascending order: all of them
// for all, the earliest for first, the latest for latest; and that every
// policy reports reopened as want.
func (b *bundle) checkHistory(t *testing.T, task string, times []string, reopened bool) {
	t.Helper()
	want := map[domain.Policy][]string{
		domain.PolicyAll:    times,
		domain.PolicyFirst:  times[:1],
		domain.PolicyLatest: times[len(times)-1:],
	}
	for _, p := range domain.Policies {
		h := b.history(t, task, p)
		if got := completionTimes(h); !slices.Equal(got, want[p]) || h.Reopened != reopened ||
			h.TaskID != task || h.Policy != string(p) {
			t.Errorf("%s under %s: %s %s completions %v reopened %v; want completions %v reopened %v",
				task, p, h.TaskID, h.Policy, got, h.Reopened, want[p], reopened)
		}
	}
}

// deadLetters lists the dead letters through the API.
func (b *bundle) deadLetters(t *testing.T, includeResolved bool) []deadLetterView {
	t.Helper()
	var body struct {
		DeadLetters []deadLetterView `json:"dead_letters"`
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/dead-letters?include_resolved=%v", b.url, includeResolved), nil)
	req.Header.Set("Authorization", "Bearer "+b.cfg.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/dead-letters: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.DeadLetters
}

// ledger is what a test posted: each task's distinct completion times.
type ledger map[string][]string

// times returns task's completion times in ascending order.
func (l ledger) times(task string) []string {
	return slices.Sorted(slices.Values(l[task]))
}

// rows lists every completion as "task completed_at", sorted.
func (l ledger) rows() []string {
	var out []string
	for task, times := range l {
		for _, at := range times {
			out = append(out, task+" "+at)
		}
	}
	slices.Sort(out)
	return out
}

// shuffledCompletions makes perTask completions, at distinct times, of
// each of tasks tasks named prefix-NN, shuffled so that many arrive after
// a later one. It returns the bodies and the ledger of what they complete.
func shuffledCompletions(prefix string, tasks, perTask int, seed uint64) ([]string, ledger) {
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	want := ledger{}
	var bodies []string
	for i := range tasks {
		task := fmt.Sprintf("%s-%02d", prefix, i)
		for j := range perTask {
			at := base.Add(time.Duration(j)*time.Hour + time.Duration(i)*time.Minute).Format(time.RFC3339)
			want[task] = append(want[task], at)
			bodies = append(bodies, completionOf(task, prefix, at, fmt.Sprintf("user%d@example.com", j)))
		}
	}
	rand.New(rand.NewPCG(seed, seed+1)).Shuffle(len(bodies), func(i, j int) { bodies[i], bodies[j] = bodies[j], bodies[i] })
	return bodies, want
}

// projectedRows lists the completions_all read model as "task
// completed_at", sorted.
func (b *bundle) projectedRows(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range testenv.Rows(t, b.svc.Pool(), "SELECT task_id, completed_at FROM completions_all.completions") {
		out = append(out, r[0].(string)+" "+r[1].(time.Time).UTC().Format(time.RFC3339))
	}
	slices.Sort(out)
	return out
}

// timelineRows lists the timeline's events as "task completed_at", from
// their stored bodies, sorted.
func (b *bundle) timelineRows(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range testenv.Rows(t, b.svc.Pool(),
		"SELECT task_id, convert_from(body, 'UTF8')::jsonb->>'completed_at' FROM timeline.events") {
		out = append(out, r[0].(string)+" "+r[1].(string))
	}
	slices.Sort(out)
	return out
}

// without returns the elements of the sorted list a that the sorted list
// b lacks, counting repeats.
func without(a, b []string) []string {
	var out []string
	rest := slices.Clone(b)
	for _, s := range a {
		if i, found := slices.BinarySearch(rest, s); found {
			rest = slices.Delete(rest, i, i+1)
		} else {
			out = append(out, s)
		}
	}
	return out
}

// checkProjectedExactlyOnce waits until every projection has applied the
// whole stream, then checks that the all projection holds exactly the
// completions in want, each once, and that nothing was set aside as a dead
// letter.
func (b *bundle) checkProjectedExactlyOnce(t *testing.T, want ledger) {
	t.Helper()
	last := b.lastSeq(t)
	b.waitApplied(t, last)
	if got, want := b.projectedRows(t), want.rows(); !slices.Equal(got, want) {
		t.Errorf("completions_all holds %d rows, want the %d posted completions once each; missing %v, unexpected %v",
			len(got), len(want), without(want, got), without(got, want))
	}
	if got, want := b.timelineRows(t), want.rows(); !slices.Equal(got, want) {
		t.Errorf("the timeline holds %d events, want the %d posted completions once each; missing %v, unexpected %v",
			len(got), len(want), without(want, got), without(got, want))
	}
	for _, p := range projections.Every {
		if cp := b.checkpoint(t, p.Name); cp != last {
			t.Errorf("%s checkpoint %d, want the stream's last sequence %d", p.Name, cp, last)
		}
	}
	if letters := b.deadLetters(t, true); len(letters) != 0 {
		t.Errorf("valid events were set aside as dead letters: %+v", letters)
	}
}

func TestReopenAndCompleteAgainKeepsBothCompletions(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	const first, second = "2024-01-15T10:30:00Z", "2024-01-16T17:00:00Z"

	b.waitApplied(t, b.accept(t, completion("t1", first)))
	b.checkHistory(t, "t1", []string{first}, false)
	b.waitApplied(t, b.accept(t, reopen("t1", "2024-01-16T09:00:00Z")))
	b.checkHistory(t, "t1", []string{first}, true)
	b.waitApplied(t, b.accept(t, completion("t1", second)))
	b.checkHistory(t, "t1", []string{first, second}, false)
	b.waitApplied(t, b.accept(t, reopen("t1", "2024-01-17T08:00:00Z")))
	b.checkHistory(t, "t1", []string{first, second}, true)
}

func TestLateCompletionBecomesFirstButNotLatest(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	const earlier, later = "2024-01-15T10:30:00Z", "2024-01-16T17:00:00Z"

	b.waitApplied(t, b.accept(t, completion("late", later)))
	b.checkHistory(t, "late", []string{later}, false)
	b.waitApplied(t, b.accept(t, completion("late", earlier)))
	b.checkHistory(t, "late", []string{earlier, later}, false)
}

func TestTiesOnCompletedAtBreakByStreamSequence(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	const at = "2024-01-15T10:30:00Z"
	for i, by := range []string{"alice@example.com", "bob@example.com"} {
		r := b.post(t, "tallyfy", completionOf("tie", "p1", at, by), "Idempotency-Key", fmt.Sprintf("tie-%d", i))
		if r.Status != http.StatusAccepted {
			t.Fatalf("post completion by %s: %+v", by, r)
		}
		b.waitApplied(t, r.StreamSeq)
	}
	for policy, want := range map[domain.Policy]string{domain.PolicyFirst: "alice@example.com", domain.PolicyLatest: "bob@example.com"} {
		h := b.history(t, "tie", policy)
		if len(h.Completions) != 1 || h.Completions[0].CompletedBy != want {
			t.Errorf("%s of two completions at the same time: %+v, want the one by %s", policy, h.Completions, want)
		}
	}
}

func TestPoisonEventIsDeadLetteredWhileLaterEventsAreProjected(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, func(c *config.Config) { c.AdminToken = adminToken })
	poison := b.publishRaw(t, "tallyfy", []byte("not json"))
	const at = "2024-01-15T10:30:00Z"
	b.waitApplied(t, b.accept(t, completion("after-poison", at)))
	b.checkHistory(t, "after-poison", []string{at}, false)

	letters := b.deadLetters(t, false)
	if len(letters) != len(projections.All) {
		t.Fatalf("dead letters %+v, want one per projection", letters)
	}
	byProjection := map[string]deadLetterView{}
	for _, d := range letters {
		byProjection[d.Projection] = d
	}
	for _, p := range projections.All {
		d, ok := byProjection[p.Name]
		if !ok || d.StreamSeq != poison || d.Reason == "" || d.Attempts != 1 || d.ResolvedAt != nil ||
			string(d.Body) != `"not json"` {
			t.Errorf("dead letter of %s: %+v (listed %v), want seq %d with a reason and its body", p.Name, d, ok, poison)
		}
	}

	retry := fmt.Sprintf("/v1/dead-letters/%d/retry", letters[0].ID)
	for _, tt := range []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"no token", retry, "", http.StatusUnauthorized, "unauthorized"},
		{"wrong token", retry, "wrong", http.StatusUnauthorized, "unauthorized"},
		{"still undecodable", retry, adminToken, http.StatusUnprocessableEntity, "still_failing"},
		{"unknown id", "/v1/dead-letters/999999/retry", adminToken, http.StatusNotFound, "dead_letter_not_found"},
		{"non-numeric id", "/v1/dead-letters/abc/retry", adminToken, http.StatusBadRequest, "invalid_parameter"},
	} {
		if r := b.adminPost(t, tt.path, tt.token); r.Status != tt.status || r.Error.Code != tt.code || r.Error.Message == "" {
			t.Errorf("%s: %+v, want %d %s", tt.name, r, tt.status, tt.code)
		}
	}
	if n := len(b.deadLetters(t, false)); n != len(projections.All) {
		t.Errorf("%d unresolved dead letters after a failed retry, want %d", n, len(projections.All))
	}

	closed := setup(t, func(c *config.Config) { c.AdminToken = "" })
	if r := closed.adminPost(t, retry, adminToken); r.Status != http.StatusForbidden || r.Error.Code != "admin_disabled" {
		t.Errorf("retry without a configured token: %+v, want 403 admin_disabled", r)
	}
}

func TestFixedDeadLetterIsResolvedByARetry(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	ctx := context.Background()
	// A rule only the latest projection enforces makes one event bad data
	// there and good data everywhere else.
	if _, err := b.svc.Pool().Exec(ctx, `ALTER TABLE completions_latest.completions
		ADD CONSTRAINT not_blocked CHECK (completed_by <> 'blocked@example.com')`); err != nil {
		t.Fatal(err)
	}
	b.svc.Start()
	const at = "2024-01-15T10:30:00Z"
	blocked := b.accept(t, completionOf("blocked-task", "p1", at, "blocked@example.com"))
	b.waitApplied(t, b.accept(t, completion("other-task", at)))

	letters := b.deadLetters(t, false)
	if len(letters) != 1 || letters[0].Projection != "completions_latest" || letters[0].StreamSeq != blocked || letters[0].Reason == "" {
		t.Fatalf("dead letters %+v, want the blocked completion in completions_latest only", letters)
	}
	for _, policy := range []domain.Policy{domain.PolicyAll, domain.PolicyFirst} {
		if h := b.history(t, "blocked-task", policy); len(h.Completions) != 1 {
			t.Errorf("%s: %+v, want the completion the other projections applied", policy, h)
		}
	}
	if r := b.get(t, "/v1/tasks/blocked-task/completions?policy=latest"); r.Status != http.StatusNotFound {
		t.Errorf("latest before the fix: %+v, want 404", r)
	}
	b.checkHistory(t, "other-task", []string{at}, false)

	if _, err := b.svc.Pool().Exec(ctx, "ALTER TABLE completions_latest.completions DROP CONSTRAINT not_blocked"); err != nil {
		t.Fatal(err)
	}
	if r := b.adminPost(t, fmt.Sprintf("/v1/dead-letters/%d/retry", letters[0].ID), adminToken); r.Status != http.StatusOK || !r.Resolved {
		t.Fatalf("retry after the fix: %+v, want 200 resolved", r)
	}
	b.checkHistory(t, "blocked-task", []string{at}, false)
	if open := b.deadLetters(t, false); len(open) != 0 {
		t.Errorf("resolved dead letter still listed: %+v", open)
	}
	all := b.deadLetters(t, true)
	if len(all) != 1 || all[0].ID != letters[0].ID || all[0].ResolvedAt == nil {
		t.Errorf("with include_resolved: %+v, want the dead letter, resolved", all)
	}
}

func TestQueryAPI(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	const at = "2024-01-15T10:30:00Z"
	pageTasks := []string{"page-a", "page-b", "page-c", "page-d", "page-e"}
	for _, task := range pageTasks {
		b.accept(t, completionOf(task, "paged", at, "user@example.com"))
	}
	b.accept(t, completionOf("elsewhere", "other-process", at, "user@example.com"))
	b.waitApplied(t, b.lastSeq(t))

	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		for _, tt := range []struct {
			path   string
			status int
			code   string
		}{
			{"/v1/tasks/no-such-task/completions", http.StatusNotFound, "task_not_found"},
			{"/v1/tasks/page-a/completions?policy=last", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/processes/paged/completions?policy=last", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/processes/paged/completions?limit=0", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/processes/paged/completions?limit=abc", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/processes/paged/completions?cursor=" + url.QueryEscape("not a cursor!"), http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/no-such-task/events", http.StatusNotFound, "task_not_found"},
			{"/v1/tasks/page-a/events?limit=0", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/page-a/events?limit=501", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/page-a/events?cursor=" + url.QueryEscape("not a cursor!"), http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/page-a/events?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("abc")), http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/%FF%FE/events", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/tasks/a%00b/events", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/events", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/events?event_id=", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/events?event_id=a&external_id=b", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/events?external_id=%FF", http.StatusBadRequest, "invalid_parameter"},
			{"/v1/events?event_id=a&limit=x", http.StatusBadRequest, "invalid_parameter"},
		} {
			if r := b.get(t, tt.path); r.Status != tt.status || r.Error.Code != tt.code || r.Error.Message == "" {
				t.Errorf("GET %s: %+v, want %d %s", tt.path, r, tt.status, tt.code)
			}
		}
	})

	t.Run("process pagination", func(t *testing.T) {
		t.Parallel()
		var seen []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > len(pageTasks) {
				t.Fatalf("pagination does not end; saw %v", seen)
			}
			var page processPage
			getJSON(t, b.url+"/v1/processes/paged/completions?limit=2&cursor="+url.QueryEscape(cursor), &page)
			if len(page.Tasks) > 2 || page.ProcessID != "paged" || page.Policy != "all" {
				t.Fatalf("page %d: %+v", pages, page)
			}
			for _, h := range page.Tasks {
				seen = append(seen, h.TaskID)
				if len(h.Completions) != 1 || h.Completions[0].ProcessID != "paged" {
					t.Errorf("%s on page %d: %+v", h.TaskID, pages, h)
				}
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(seen)), pageTasks) {
			t.Errorf("pages listed %v, want each of %v once", seen, pageTasks)
		}
	})

	t.Run("projection status", func(t *testing.T) {
		t.Parallel()
		var body struct {
			Projections []projectionStatus `json:"projections"`
		}
		getJSON(t, b.url+"/v1/projections", &body)
		last := b.lastSeq(t)
		if len(body.Projections) != len(projections.Every) {
			t.Fatalf("projections %+v, want %d", body.Projections, len(projections.Every))
		}
		for i, p := range body.Projections {
			want := projectionStatus{Name: projections.Every[i].Name, Policy: string(projections.Every[i].Policy),
				Checkpoint: last, StreamLastSeq: last, Lag: 0, State: "live"}
			if p != want {
				t.Errorf("got %+v, want %+v", p, want)
			}
		}
	})
}

// consumerSessions names the Postgres sessions of every partition's
// consumer of every group of projections.
func (b *bundle) consumerSessions() []string {
	var names []string
	for _, g := range projections.Groups(b.cfg.Partitions) {
		names = append(names, groupSessions(g)...)
	}
	return names
}

// groupSessions names the consumer sessions of a group's partitions.
func groupSessions(g projections.Group) []string {
	var names []string
	for p := range g.Partitions {
		names = append(names, consumers.SessionName(projections.Worker(g.Name, p, g.Partitions)))
	}
	return names
}

// sessionsApplying names the consumer sessions that apply projection.
func sessionsApplying(projection string, partitions int) []string {
	for _, g := range projections.Groups(partitions) {
		if slices.ContainsFunc(g.Stages, func(p projections.Projection) bool { return p.Name == projection }) {
			return groupSessions(g)
		}
	}
	return nil
}

// forPartitions runs test with one partition and with four, as parallel
// subtests.
func forPartitions(t *testing.T, test func(t *testing.T, partitions int)) {
	for _, n := range []int{1, 4} {
		t.Run(fmt.Sprintf("partitions=%d", n), func(t *testing.T) {
			t.Parallel()
			test(t, n)
		})
	}
}

// Conditions on pg_stat_activity for countSessions and killSessions.
const (
	anySession        = "true"
	inTransaction     = "xact_start IS NOT NULL"
	waitingForTheLock = "wait_event_type = 'Lock'"
)

// sessionsWhere selects from pg_stat_activity the sessions named $1 in the
// test's database that meet a condition.
const sessionsWhere = " FROM pg_stat_activity WHERE application_name = ANY($1) AND datname = current_database() AND "

// countSessions counts the named sessions that meet cond.
func (b *bundle) countSessions(t *testing.T, cond string, names ...string) int {
	t.Helper()
	return len(testenv.Rows(t, b.svc.Pool(), "SELECT pid"+sessionsWhere+cond, names))
}

// killSessions terminates the backends of the named sessions that meet
// cond, as a crash or a cut connection would, and returns how many it
// ended. It does not fail t, so that any goroutine may call it.
func (b *bundle) killSessions(cond string, names ...string) (int, error) {
	rows, err := b.svc.Pool().Query(context.Background(), "SELECT pg_terminate_backend(pid)"+sessionsWhere+cond, names)
	if err != nil {
		return 0, err
	}
	ended, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	return len(slices.DeleteFunc(ended, func(ok bool) bool { return !ok })), err
}

// killInTransaction polls, every millisecond for at most limit, for
// consumer sessions inside a transaction and kills those it catches; it
// returns how many.
func (b *bundle) killInTransaction(t *testing.T, limit time.Duration) int {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n, err := b.killSessions(inTransaction, b.consumerSessions()...)
		if err != nil {
			t.Errorf("kill consumer sessions: %v", err)
			return 0
		}
		if n > 0 {
			return n
		}
	}
	return 0
}

// lockCheckpoint takes projection's checkpoint table exclusively in a
// transaction of its own, so that the projection's consumer blocks on its
// next batch until release is called (or t ends).
func (b *bundle) lockCheckpoint(t *testing.T, projection string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.svc.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		if err := tx.Rollback(ctx); err != nil {
			t.Errorf("release the checkpoint lock: %v", err)
		}
	})
	t.Cleanup(release) // before the service closes, which waits for the connection
	if _, err := tx.Exec(ctx, "LOCK TABLE "+projection+".checkpoint IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	return release
}

func TestFailedBatchWithLaterEventsInFlightSkipsNothing(t *testing.T) {
	t.Parallel()
	forPartitions(t, testFailedBatchWithLaterEventsInFlightSkipsNothing)
}

func testFailedBatchWithLaterEventsInFlightSkipsNothing(t *testing.T, partitions int) {
	b := setupRunning(t, func(c *config.Config) { c.BatchSize, c.Partitions = 5, partitions })
	bodies, want := shuffledCompletions("trap", 8, 5, 1)
	rounds := slices.Collect(slices.Chunk(bodies, 10))
	all := projections.ForPolicy(domain.PolicyAll)
	session := sessionsApplying(all.Name, partitions)

	b.ingest(t, rounds[0])
	b.waitApplied(t, b.lastSeq(t))

	release := b.lockCheckpoint(t, all.Name)
	b.ingest(t, rounds[1])
	eventually(t, "the consumer's batch to block on the checkpoint", func() bool {
		return b.countSessions(t, waitingForTheLock, session...) > 0
	})
	b.ingest(t, rounds[2]) // stored after the blocked batch, delivered only later
	killed, err := b.killSessions(anySession, session...)
	if err != nil || killed == 0 {
		t.Fatalf("kill the blocked consumer session: ended %d, %v", killed, err)
	}
	release()
	b.ingest(t, rounds[3])

	b.checkProjectedExactlyOnce(t, want)
}

func TestKilledDatabaseSessionsLoseNothing(t *testing.T) {
	t.Parallel()
	forPartitions(t, testKilledDatabaseSessionsLoseNothing)
}

func testKilledDatabaseSessionsLoseNothing(t *testing.T, partitions int) {
	b := setupRunning(t, func(c *config.Config) { c.BatchSize, c.Partitions = 20, partitions })
	bodies, want := shuffledCompletions("killed", 50, 6, 2)
	bodies = append(bodies, bodies[:30]...) // sender retries
	eventually(t, "every consumer to open its session", func() bool {
		return b.countSessions(t, anySession, b.consumerSessions()...) == len(b.consumerSessions())
	})

	// Each round kills consumer sessions while a part of the traffic is
	// ingested, then lets the consumers recover: even rounds kill them
	// idle, before the part arrives; odd rounds kill whichever is caught
	// inside a transaction, applying a batch.
	var idle, midBatch int
	for round, part := range slices.Collect(slices.Chunk(bodies, 60)) {
		if round%2 == 0 {
			n, err := b.killSessions(anySession, b.consumerSessions()...)
			if err != nil {
				t.Fatal(err)
			}
			idle += n
			b.ingest(t, part)
		} else {
			caught := make(chan int)
			go func() { caught <- b.killInTransaction(t, 3*time.Second) }()
			b.ingest(t, part)
			midBatch += <-caught
		}
		b.waitApplied(t, b.lastSeq(t))
	}
	t.Logf("killed %d idle consumer sessions and %d applying a batch", idle, midBatch)
	if idle == 0 || midBatch == 0 {
		t.Fatal("the consumer sessions were not killed both idle and applying a batch")
	}

	b.checkProjectedExactlyOnce(t, want)
	for task := range want {
		b.checkHistory(t, task, want.times(task), false)
	}
}

// activeReplicas counts, per projection, the services whose consumer of it
// is active, failing t if two are at once.
func activeReplicas(t *testing.T, svcs ...*service.Service) []int {
	t.Helper()
	counts := make([]int, len(projections.Every))
	for _, s := range svcs {
		for _, c := range s.Consumers() {
			if !c.Active() {
				continue
			}
			for i, p := range projections.Every {
				if slices.Contains(c.Projections(), p.Name) {
					counts[i]++
				}
			}
		}
	}
	for i, n := range counts {
		if n > 1 {
			t.Fatalf("%d replicas apply %s at once", n, projections.Every[i].Name)
		}
	}
	return counts
}

func TestOnlyOneReplicaAppliesEachProjection(t *testing.T) {
	t.Parallel()
	first := setup(t, nil)
	second := first.replica(t)
	bodies, want := shuffledCompletions("replica", 10, 4, 3)
	rounds := slices.Collect(slices.Chunk(bodies, 20))

	first.svc.Start()
	eventually(t, "the first replica to take every projection", func() bool {
		return !slices.Contains(activeReplicas(t, first.svc), 0)
	})
	second.svc.Start()
	first.ingest(t, rounds[0][:10])
	second.ingest(t, rounds[0][10:]) // either replica's ingest feeds the same stream
	last := first.lastSeq(t)
	eventually(t, "the first replica to project every event", func() bool {
		activeReplicas(t, first.svc, second.svc)
		return first.applied(t, last)
	})
	if counts := activeReplicas(t, second.svc); slices.Contains(counts, 1) {
		t.Errorf("the standby replica is active for %v while the first holds every projection", counts)
	}

	first.svc.Close(context.Background()) // the replica holding the locks goes away
	eventually(t, "the standby replica to take every projection", func() bool {
		return !slices.Contains(activeReplicas(t, first.svc, second.svc), 0)
	})
	second.ingest(t, rounds[1])
	second.checkProjectedExactlyOnce(t, want)
}
