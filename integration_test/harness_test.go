package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// bundle is one test's running taskledger: its HTTP API and its stream.
type bundle struct {
	env    *testenv.Env
	cfg    config.Config
	svc    *service.Service
	url    string
	js     jetstream.JetStream
	stream string
}

// setup starts taskledger on a private database and stream; adjust may
// change the configuration first. The projection consumers are not
// started: see setupRunning.
func setup(t testing.TB, adjust func(*config.Config)) *bundle {
	t.Helper()
	env := testenv.New(t)
	cfg := env.Config()
	cfg.AdminToken = adminToken
	if adjust != nil {
		adjust(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Registered first so that it runs last, after the service has closed.
	_, js := testenv.ConnectURL(t, cfg.NATSURL)
	env.DeleteStreamOnCleanup(t, js)
	svc, url := openService(t, cfg)
	return &bundle{env: env, cfg: cfg, svc: svc, url: url, js: js, stream: cfg.Stream}
}

// setupRunning is setup with the projection consumers running, so that
// ingested events reach the query API.
func setupRunning(t testing.TB, adjust func(*config.Config)) *bundle {
	t.Helper()
	b := setup(t, adjust)
	b.svc.Start()
	return b
}

// replica opens a second taskledger on b's database and stream, as another
// worker replica would. Its consumers are not started.
func (b *bundle) replica(t testing.TB) *bundle {
	t.Helper()
	return b.reopen(t, b.cfg)
}

// reopen opens another taskledger with cfg on b's database and stream.
// Its consumers are not started.
func (b *bundle) reopen(t testing.TB, cfg config.Config) *bundle {
	t.Helper()
	svc, url := openService(t, cfg)
	r := *b
	r.cfg, r.svc, r.url = cfg, svc, url
	return &r
}

// openService opens taskledger with cfg and serves its API over HTTP until
// t ends. Closing the service earlier is fine: Close may be called twice.
func openService(t testing.TB, cfg config.Config) (*service.Service, string) {
	t.Helper()
	return openServiceWith(t, cfg, testLogger(t))
}

// openServiceWith is openService logging to log, with options.
func openServiceWith(t testing.TB, cfg config.Config, log zerolog.Logger, opts ...service.Option) (*service.Service, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := service.Open(ctx, cfg, log, opts...)
	if err != nil {
		t.Fatalf("open service: %v", err)
	}
	srv := httptest.NewServer(conforming(t, svc.Handler()))
	t.Cleanup(func() {
		srv.Close()
		svc.Close(context.Background())
	})
	return svc, srv.URL
}

// waitLimit bounds every wait for the asynchronous pipeline. It is generous
// because a wait that succeeds returns at once; no test asserts how soon.
const waitLimit = 20 * time.Second

// eventually polls cond until it holds, failing t with what when it has not
// held within waitLimit.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Poll(t, waitLimit, what, cond)
}

// waitApplied waits until every projection's checkpoint reaches seq.
func (b *bundle) waitApplied(t testing.TB, seq uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("every projection to apply seq %d", seq), func() bool { return b.applied(t, seq) })
}

// applied reports whether every projection's checkpoint has reached seq.
func (b *bundle) applied(t testing.TB, seq uint64) bool {
	t.Helper()
	for _, p := range projections.Every {
		if b.checkpoint(t, p.Name) < seq {
			return false
		}
	}
	return true
}

// checkOneStored checks the answers to n deliveries of one event: one 202
// and n-1 200 duplicates, all naming the same stream sequence.
func checkOneStored(t *testing.T, answers <-chan reply, n int, what string) {
	t.Helper()
	count := map[int]int{}
	seqs := map[uint64]bool{}
	for r := range answers {
		count[r.Status]++
		seqs[r.StreamSeq] = true
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusOK] != n-1 || len(seqs) != 1 {
		t.Errorf("%s: statuses %v over sequences %v, want one 202 and %d 200s on one sequence", what, count, seqs, n-1)
	}
}

// checkpoint reads a projection's checkpoint from the database.
func (b *bundle) checkpoint(t testing.TB, projection string) uint64 {
	t.Helper()
	cp, err := projections.Checkpoint(context.Background(), b.svc.Pool(), projection)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// lastSeq is the sequence of the last event in the test's stream.
func (b *bundle) lastSeq(t testing.TB) uint64 {
	t.Helper()
	return b.streamState(t).LastSeq
}

// publishRaw stores body in the stream directly, bypassing ingest and its
// validation, as another tool writing to the stream could; it returns the
// stream sequence.
func (b *bundle) publishRaw(t testing.TB, source string, body []byte) uint64 {
	t.Helper()
	ack, err := b.js.Publish(context.Background(), b.env.SubjectPrefix+"."+source, body)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// get sends a GET to path on the API and decodes the answer.
func (b *bundle) get(t *testing.T, path string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

type reply struct {
	Status    int
	Header    http.Header
	StreamSeq uint64 `json:"stream_seq"`
	DedupKey  string `json:"dedup_key"`
	Duplicate bool   `json:"duplicate"`
	State     string `json:"status"`
	Resolved  bool   `json:"resolved"` // a dead-letter retry's answer
	Error     struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// post sends body to the webhook endpoint of source with JSON content type
// and the given extra headers (name, value pairs).
func (b *bundle) post(t *testing.T, source, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+"/v1/webhooks/"+source, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s %s: status %d, body not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	return r
}

// allSubjects is the filter matching every event of the test's stream.
func (b *bundle) allSubjects() string {
	return eventlog.StreamConfig{SubjectPrefix: b.env.SubjectPrefix}.AllSubjects()
}

// messages is the number of events stored in the test's stream.
func (b *bundle) messages(t testing.TB) uint64 {
	t.Helper()
	return b.streamState(t).Msgs
}

func (b *bundle) streamState(t testing.TB) jetstream.StreamState {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func completion(task, at string) string {
	return completionOf(task, "p1", at, "user@example.com")
}

// completionOf is a task.completed body with every field chosen.
func completionOf(task, process, at, by string) string {
	return fmt.Sprintf(`{"event":"task.completed","task_id":%q,"process_id":%q,"completed_at":%q,"completed_by":%q}`,
		task, process, at, by)
}

// reopen is a task.reopened body.
func reopen(task, at string) string {
	return fmt.Sprintf(`{"event":"task.reopened","task_id":%q,"reopened_at":%q}`, task, at)
}

// accept posts body from tallyfy, fails unless it is stored as a new event,
// and returns its stream sequence.
func (b *bundle) accept(t *testing.T, body string) uint64 {
	t.Helper()
	r := b.post(t, "tallyfy", body)
	if r.Status != http.StatusAccepted {
		t.Fatalf("post %s: %+v, want 202", body, r)
	}
	return r.StreamSeq
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}
