package integration_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/ingest"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/testenv"
)

// paddedCompletion is a valid completion of task padded to exactly size
// bytes, produced as it is read so that the sender holds none of it.
func paddedCompletion(task string, size int) io.Reader {
	head := fmt.Sprintf(`{"event":"task.completed","task_id":%q,"completed_at":"2024-01-15T10:30:00Z","pad":"`, task)
	return io.MultiReader(strings.NewReader(head), io.LimitReader(padding{}, int64(size-len(head)-2)), strings.NewReader(`"}`))
}

type padding struct{}

func (padding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func (b *bundle) postReader(t *testing.T, source string, body io.Reader, size int64, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+"/v1/webhooks/"+source, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

// The stream takes a message of at most the server's max_payload, headers
// included: a body under TASKLEDGER_MAX_BODY_BYTES that the stored headers
// take over it is 413, and a stored header over its limit is 431, never
// 503 (which would have the sender retry forever).
func TestBodiesAndHeadersOverWhatTheStreamTakesAreRefusedForGood(t *testing.T) {
	t.Parallel()
	// Slow as the shared machine may be, the body that fits is stored: a
	// 503 here would be about the load, not the sizes under test.
	b := setup(t, func(c *config.Config) { c.PublishTimeout = time.Minute })
	maxPayload := int(b.js.Conn().MaxPayload())
	if int64(maxPayload) > b.cfg.MaxBodyBytes {
		t.Fatalf("max_payload %d above the body limit %d: this test needs the defaults", maxPayload, b.cfg.MaxBodyBytes)
	}
	size := maxPayload - 2000 // room for the headers taskledger stores
	if r := b.postReader(t, "tallyfy", paddedCompletion("fits", size), int64(size)); r.Status != http.StatusAccepted {
		t.Fatalf("a body with room for its headers: %+v", r)
	}
	b.refused(t, "stored headers take the body over max_payload", 413, httpjson.CodeBodyTooLarge, func() reply {
		return b.postReader(t, "tallyfy", paddedCompletion("over", size), int64(size),
			"User-Agent", strings.Repeat("u", ingest.MaxStoredHeaderBytes), "X-Request-Id", strings.Repeat("r", 1000))
	})
	b.refused(t, "a body at the body limit", 413, httpjson.CodeBodyTooLarge, func() reply {
		return b.postReader(t, "tallyfy", paddedCompletion("at-limit", maxPayload), int64(maxPayload))
	})
	b.refused(t, "a stored header over its limit", 431, httpjson.CodeHeaderTooLarge, func() reply {
		return b.post(t, "tallyfy", completion("long-header", "2024-01-15T10:30:00Z"),
			"X-Request-Id", strings.Repeat("r", ingest.MaxStoredHeaderBytes+1))
	})
	// An unstored header may be as long as the HTTP server allows.
	if r := b.post(t, "tallyfy", completion("long-unstored", "2024-01-15T10:30:00Z"), "X-Other", strings.Repeat("o", 64<<10)); r.Status != http.StatusAccepted {
		t.Errorf("a long header that is not stored: %+v", r)
	}
}

// The limit is exact, every header the publish adds included: a delivery
// whose message (headers and body, as the server counts them) is exactly
// max_payload is stored, and one a byte over is a permanent 413.
func TestAMessageOfExactlyWhatTheStreamTakesIsStoredAndAByteMoreIsNot(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	limit := int(b.js.Conn().MaxPayload())
	// Every message the service sends, as the server received it.
	sent, err := b.js.Conn().SubscribeSync(b.allSubjects())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sent.Unsubscribe() })
	// post sends a padded completion of task and returns, when it is
	// stored, the size of its message and of its received-at time.
	post := func(task string, bodySize int) (r reply, size, stamp int) {
		t.Helper()
		r = b.postReader(t, "tallyfy", paddedCompletion(task, bodySize), int64(bodySize))
		if r.Status != http.StatusAccepted {
			return r, 0, 0
		}
		m, err := sent.NextMsg(waitLimit)
		if err != nil {
			t.Fatalf("the message of %s: %v", task, err)
		}
		return r, m.Size() - len(m.Subject) - len(m.Reply), len(m.Header.Get(eventlog.HeaderReceivedAt))
	}
	// A message's size is its body's, its received-at time's (as long as
	// the clock makes it: trailing zeros of the fraction are dropped) and
	// a part the same for every completion of a task id of one length.
	const probeSize = 1000
	r, size, stamp := post("edge-0", probeSize)
	if r.Status != http.StatusAccepted {
		t.Fatalf("probe: %+v", r)
	}
	fixed := size - probeSize - stamp
	for range 100 {
		stamp = max(stamp, len(time.Now().UTC().Format(time.RFC3339Nano)))
	}
	// bodyFor is the body size that makes a message of total bytes when
	// its time is as long as the clock's longest.
	bodyFor := func(total int) int { return total - fixed - stamp }
	stored := 1
	// A delivery whose time comes out shorter is smaller than sized for:
	// each side of the limit is posted until one sized exactly is seen.
	for i := 1; ; i++ {
		r, size, _ := post(fmt.Sprintf("edge-%d", i), bodyFor(limit))
		if r.Status != http.StatusAccepted {
			t.Fatalf("a delivery whose message is at most max_payload %d: %+v", limit, r)
		}
		stored++
		if size == limit {
			break
		}
		if i == 20 {
			t.Fatalf("no message came out at max_payload %d, the last was %d", limit, size)
		}
	}
	for i := 1; ; i++ {
		r, size, _ := post(fmt.Sprintf("over-%d", i), bodyFor(limit+1))
		if r.Status == http.StatusRequestEntityTooLarge && r.Error.Code == httpjson.CodeBodyTooLarge {
			break
		}
		if r.Status != http.StatusAccepted || size > limit {
			t.Fatalf("a delivery whose message is max_payload+1 %d: %+v (%d bytes stored)", limit+1, r, size)
		}
		stored++
		if i == 20 {
			t.Fatalf("no delivery sized for max_payload+1 was refused")
		}
	}
	if n := b.messages(t); n != uint64(stored) {
		t.Errorf("stream holds %d events, want the %d accepted: the refused one stored something", n, stored)
	}
}

// heldBody is a chunked request body that sends its first bytes and then
// waits for release before sending the rest. sent is closed once the first
// bytes are on their way, after the request's headers.
type heldBody struct {
	w       *io.PipeWriter
	sent    chan struct{}
	release chan struct{}
	once    sync.Once
}

// finish lets the rest of the body go.
func (h *heldBody) finish() { h.once.Do(func() { close(h.release) }) }

func (b *bundle) postHeld(t *testing.T, task string, done chan<- reply) *heldBody {
	t.Helper()
	pr, pw := io.Pipe()
	h := &heldBody{w: pw, sent: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(h.finish) // a failing test must not leave the server waiting
	body := completion(task, "2024-01-15T10:30:00Z")
	go func() {
		_, _ = pw.Write([]byte(body[:10]))
		close(h.sent)
		<-h.release
		_, _ = pw.Write([]byte(body[10:]))
		pw.Close()
	}()
	go func() {
		req, _ := http.NewRequest(http.MethodPost, b.url+"/v1/webhooks/tallyfy", pr) // unknown length: chunked
		req.Header.Set("Content-Type", "application/json")
		done <- do(t, req)
	}()
	return h
}

func TestRequestsOverTheInflightBudgetAre429(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.MaxBodyBytes, c.MaxInflightBytes = 4096, 8192 })
	// Two bodies of unknown length are each charged the body limit: the
	// budget is full while they trickle in.
	done := make(chan reply, 2)
	held := []*heldBody{b.postHeld(t, "held-1", done), b.postHeld(t, "held-2", done)}
	// Probe only once both are under way: a probe still in flight when a
	// held request arrives would have that one refused instead.
	for _, h := range held {
		<-h.sent
	}
	var r reply
	eventually(t, "the budget to fill", func() bool {
		// Invalid, so that it stores nothing while the budget has room.
		r = b.post(t, "tallyfy", `{}`)
		return r.Status == http.StatusTooManyRequests
	})
	if r.Header.Get("Retry-After") != "1" || r.Error.Code != httpjson.CodeTooManyRequests {
		t.Errorf("429 answer %+v", r)
	}
	if r := b.post(t, "tallyfy", completion("over-budget", "2024-01-15T10:30:00Z")); r.Status != http.StatusTooManyRequests {
		t.Errorf("a valid request over the budget: %+v", r)
	}
	for _, h := range held {
		h.finish()
	}
	for range held {
		if r := <-done; r.Status != http.StatusAccepted {
			t.Errorf("a held request: %+v", r)
		}
	}
	// The budget is released: the refused request now goes through, right
	// after the two held ones: the 429s stored nothing.
	if r := b.post(t, "tallyfy", completion("over-budget", "2024-01-15T10:30:00Z")); r.Status != http.StatusAccepted || r.StreamSeq != 3 {
		t.Errorf("retry after the budget freed: %+v, want 202 at seq 3", r)
	}
}

// A flood of large bodies meets 429 once the bytes in flight are over the
// default budget, and the serving process's memory stays bounded: measured
// on a real `taskledger serve` with its embedded NATS, as deployed (the
// test binary runs under the race detector, whose shadow memory would
// dwarf what is measured).
func TestAFloodOfLargeBodiesStaysWithinTheBudget(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePorts(t, 1)[0])
	serve := testenv.NewProcess(t, "serve", testenv.Binary(t, "github.com/taskledger/taskledger/cmd/taskledger"), []string{"serve"}, []string{
		"TASKLEDGER_HTTP_ADDR=" + addr, "TASKLEDGER_DATABASE_URL=" + testenv.NewDatabase(t),
		"TASKLEDGER_NATS_URL=", "TASKLEDGER_DATA_DIR=" + dataDir, "TASKLEDGER_EMBEDDED_NATS_ADDR=",
		"TASKLEDGER_PUBLISH_TIMEOUT=2m", // slow as the disk may be, every admitted body is stored
		"TASKLEDGER_LOG_LEVEL=warn",
	})
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr
	eventually(t, "taskledger serve to be ready", func() bool {
		if !serve.Running() {
			t.Fatalf("taskledger serve exited:\n%s", serve.Log())
		}
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	before := processMemory(t, serve.Pid(), "VmRSS")

	const senders, size = 200, 1_000_000 // a body under the default 1 MiB, with room for its headers
	statuses := make(chan reply, senders)
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodPost, url+"/v1/webhooks/tallyfy", paddedCompletion("flood-"+strconv.Itoa(i), size))
			if err != nil {
				t.Error(err)
				return
			}
			req.ContentLength = size
			req.Header.Set("Content-Type", "application/json")
			statuses <- do(t, req)
		})
	}
	wg.Wait()
	close(statuses)
	grown := processMemory(t, serve.Pid(), "VmHWM") - before
	count := map[int]int{}
	for r := range statuses {
		count[r.Status]++
		if r.Status == http.StatusTooManyRequests && (r.Header.Get("Retry-After") == "" || r.Error.Code != httpjson.CodeTooManyRequests) {
			t.Errorf("429 answer %+v, want Retry-After and %s", r, httpjson.CodeTooManyRequests)
		}
	}
	t.Logf("%d senders x %d KB: %v; peak RSS of taskledger serve %d MB above its %d MB at rest",
		senders, size>>10, count, grown>>20, before>>20)
	if count[http.StatusAccepted]+count[http.StatusTooManyRequests] != senders {
		t.Errorf("statuses %v, want only 202 and 429", count)
	}
	if count[http.StatusTooManyRequests] == 0 {
		t.Errorf("statuses %v: 200 MB of bodies at once met no 429 from a 64 MiB budget", count)
	}
	var projected struct {
		Projections []struct {
			StreamLastSeq int `json:"stream_last_seq"`
		} `json:"projections"`
	}
	getJSON(t, url+"/v1/projections", &projected)
	if got := projected.Projections[0].StreamLastSeq; got != count[http.StatusAccepted] {
		t.Errorf("stream holds %d events, want the %d accepted", got, count[http.StatusAccepted])
	}
	// The 64 MiB in flight, each body copied a few times on its way into
	// the stream, the stream's cache of what it stored, and the readers'
	// batches of it.
	if grown > 400<<20 {
		t.Errorf("the process's resident memory grew by %d MB under the flood, want at most 400 MB", grown>>20)
	}
}

// processMemory is field (VmRSS, VmHWM: the peak) of process pid, in bytes.
func processMemory(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func TestRouterErrorsAndAdminAccess(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	send := func(method, path, auth string) reply {
		req, _ := http.NewRequest(method, b.url+path, bytes.NewReader(nil))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return do(t, req)
	}
	cursor := base64.RawURLEncoding.EncodeToString([]byte("\xff\xfe"))
	for _, tt := range []struct {
		method, path, auth string
		status             int
		code               string
	}{
		{"GET", "/v1/nothing-here", "", 404, "not_found"},
		{"GET", "/v1/webhooks/tallyfy", "", 405, "method_not_allowed"},
		{"DELETE", "/v1/projections", "", 405, "method_not_allowed"},
		{"GET", "/v1/dead-letters", "", 401, "unauthorized"},
		{"GET", "/v1/dead-letters", "Bearer wrong", 401, "unauthorized"},
		{"GET", "/v1/dead-letters", "Basic " + adminToken, 401, "unauthorized"},
		{"GET", "/v1/dead-letters", "Bearer " + adminToken, 200, ""},
		{"GET", "/v1/dead-letters", "bearer " + adminToken, 200, ""},
		{"GET", "/v1/dead-letters", "BEARER " + adminToken, 200, ""},
		{"GET", "/v1/tasks/%00/completions", "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/%FF%FE/completions", "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/ok%00ok/completions", "", 400, "invalid_parameter"},
		{"GET", "/v1/processes/%FF/completions", "", 400, "invalid_parameter"},
		{"GET", "/v1/processes/p1/completions?cursor=" + cursor, "", 400, "invalid_parameter"},
		{"GET", "/v1/processes/p1/completions?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("a\x00")), "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/%E2%9C%93/completions", "", 404, "task_not_found"}, // valid UTF-8: just unknown
		{"GET", "/v1/tasks/%FF%FE/events", "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/%00/events", "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/t1/events?cursor=" + cursor, "", 400, "invalid_parameter"},
		{"GET", "/v1/tasks/%E2%9C%93/events", "", 404, "task_not_found"},
		{"GET", "/v1/events?dedup_key=%FF%FE", "", 400, "invalid_parameter"},
		{"GET", "/v1/events?dedup_key=tallyfy:id:%C3", "", 400, "invalid_parameter"},
		{"GET", "/v1/events?event_id=e%00", "", 400, "invalid_parameter"},
		{"GET", "/v1/events?dedup_key=tallyfy:id:%E2%9C%93", "", 200, ""},
	} {
		r := send(tt.method, tt.path, tt.auth)
		if r.Status != tt.status || r.Error.Code != tt.code {
			t.Errorf("%s %s (%s): %d %q, want %d %q", tt.method, tt.path, tt.auth, r.Status, r.Error.Code, tt.status, tt.code)
		}
		if ct := r.Header.Get("Content-Type"); tt.code != "" && (r.Error.Message == "" || !strings.HasPrefix(ct, "application/json")) {
			t.Errorf("%s %s: error body %+v as %q, want a JSON error with a message", tt.method, tt.path, r.Error, ct)
		}
		if tt.status == 405 && r.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tt.method, tt.path)
		}
	}
}
