package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/testenv"
)

func TestAcceptedEventIsStoredWithItsDedupKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := completion("abc123", "2024-01-15T10:30:00Z")
	r := b.post(t, "tallyfy", body, "User-Agent", "tallyfy-webhooks/1", "X-Unrelated", "dropped")
	if r.Status != http.StatusAccepted || r.State != "accepted" || r.Duplicate || r.StreamSeq != 1 {
		t.Fatalf("got %+v, want 202 accepted at seq 1", r)
	}
	s, _ := b.js.Stream(context.Background(), b.stream)
	msg, err := s.GetMsg(context.Background(), r.StreamSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(nats.MsgIdHdr); got != r.DedupKey || !strings.HasPrefix(got, "tallyfy:derived:") {
		t.Errorf("Nats-Msg-Id = %q, want the answered dedup key %q", got, r.DedupKey)
	}
	if string(msg.Data) != body {
		t.Errorf("stored body %q, want the raw body", msg.Data)
	}
	if msg.Subject != b.env.SubjectPrefix+".tallyfy" || msg.Header.Get(eventlog.HeaderSource) != "tallyfy" {
		t.Errorf("subject %q, source header %q", msg.Subject, msg.Header.Get(eventlog.HeaderSource))
	}
	if ua := msg.Header.Get(eventlog.HeaderRequestPrefix + "User-Agent"); ua != "tallyfy-webhooks/1" {
		t.Errorf("forwarded User-Agent = %q", ua)
	}
	if msg.Header.Get(eventlog.HeaderRequestPrefix+"X-Unrelated") != "" {
		t.Error("an unlisted request header was stored")
	}
}

func TestRepeatIsADuplicateWithTheOriginalSequence(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	tests := []struct {
		name    string
		body    string
		headers []string
	}{
		{"derived key", completion("t-derived", "2024-01-15T10:30:00Z"), nil},
		{"idempotency key", completion("t-idem", "2024-01-15T10:30:00Z"), []string{"Idempotency-Key", "k-1"}},
		{"x-idempotency key", completion("t-xidem", "2024-01-15T10:30:00Z"), []string{"X-Idempotency-Key", "k-2"}},
		{"webhook-id", completion("t-wh", "2024-01-15T10:30:00Z"), []string{"webhook-id", "msg_2Kp"}},
		{"event_id", `{"event":"task.completed","task_id":"t-ev","completed_at":"2024-01-15T10:30:00Z","event_id":"ev-1"}`, nil},
	}
	for _, tt := range tests {
		first := b.post(t, "tallyfy", tt.body, tt.headers...)
		if first.Status != http.StatusAccepted {
			t.Fatalf("%s: first delivery %+v", tt.name, first)
		}
		// A retry re-indented by the sender is the same body.
		again := b.post(t, "tallyfy", " "+strings.ReplaceAll(tt.body, ",", ", ")+"\n", tt.headers...)
		if again.Status != http.StatusOK || again.State != "duplicate" || !again.Duplicate ||
			again.StreamSeq != first.StreamSeq || again.DedupKey != first.DedupKey {
			t.Errorf("%s: retry got %+v, want 200 duplicate of seq %d", tt.name, again, first.StreamSeq)
		}
	}
	if n := b.messages(t); n != uint64(len(tests)) {
		t.Errorf("stream holds %d events, want %d", n, len(tests))
	}
}

func TestConcurrentIdenticalRequestsStoreOneEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := completion("t-race", "2024-01-15T10:30:00Z")
	const senders = 100
	statuses := make(chan reply, senders)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() { statuses <- b.post(t, "tallyfy", body) })
	}
	wg.Wait()
	close(statuses)
	checkOneStored(t, statuses, senders, "concurrent identical requests")
	if n := b.messages(t); n != 1 {
		t.Errorf("stream holds %d events, want 1", n)
	}
}

func TestReopenAndCompleteAgainIsANewEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	keys := map[string]bool{}
	for _, body := range []string{
		completion("t1", "2024-01-15T10:30:00Z"),
		`{"event":"task.reopened","task_id":"t1","reopened_at":"2024-01-16T09:00:00Z"}`,
		completion("t1", "2024-01-16T17:00:00Z"),
		`{"event":"task.assigned","task_id":"t1","assignee":"x"}`, // other types are stored too
	} {
		r := b.post(t, "tallyfy", body)
		if r.Status != http.StatusAccepted {
			t.Fatalf("%s: %+v", body, r)
		}
		keys[r.DedupKey] = true
	}
	if len(keys) != 4 || b.messages(t) != 4 {
		t.Errorf("%d distinct keys and %d stored events, want 4 and 4", len(keys), b.messages(t))
	}
}

func TestRejectedRequestsStoreNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) {
		c.Sources = []string{"tallyfy", "zapier"}
		c.MaxBodyBytes = 1024
	})
	valid := completion("t1", "2024-01-15T10:30:00Z")
	if r := b.post(t, "tallyfy", valid, "Idempotency-Key", "used"); r.Status != http.StatusAccepted {
		t.Fatalf("setup delivery: %+v", r)
	}
	tests := []struct {
		name        string
		source      string
		contentType string
		body        string
		headers     []string
		status      int
		code        string
	}{
		{"unknown source", "github", "application/json", valid, nil, 404, httpjson.CodeUnknownSource},
		{"malformed source", "Tally.fy", "application/json", valid, nil, 404, httpjson.CodeUnknownSource},
		{"not json content type", "tallyfy", "text/plain", valid, nil, 415, httpjson.CodeUnsupportedMedia},
		{"no content type", "tallyfy", "", valid, nil, 415, httpjson.CodeUnsupportedMedia},
		{"body over the limit", "tallyfy", "application/json", `{"pad":"` + strings.Repeat("x", 2000) + `"}`, nil, 413, httpjson.CodeBodyTooLarge},
		{"not json", "tallyfy", "application/json", `{"event":`, nil, 400, httpjson.CodeInvalidJSON},
		{"invalid UTF-8", "tallyfy", "application/json", "{\"event\":\"task.completed\",\"task_id\":\"\xff\xfe\",\"completed_at\":\"2024-01-15T10:30:00Z\"}", nil, 400, httpjson.CodeInvalidJSON},
		{"lone surrogate escape in task_id", "tallyfy", "application/json", `{"event":"task.completed","task_id":"\ud800","completed_at":"2024-01-15T10:30:00Z"}`, nil, 422, domain.CodeInvalidField},
		{"lone surrogate escape in event_id", "tallyfy", "application/json", `{"event":"task.completed","task_id":"t","event_id":"e\udbff","completed_at":"2024-01-15T10:30:00Z"}`, nil, 422, domain.CodeInvalidField},
		{"year 10000 in UTC", "tallyfy", "application/json", `{"event":"task.completed","task_id":"t","completed_at":"9999-12-31T23:59:59-01:00"}`, nil, 422, domain.CodeInvalidField},
		{"empty body", "tallyfy", "application/json", ``, nil, 400, httpjson.CodeInvalidJSON},
		{"json array", "tallyfy", "application/json", `[1]`, nil, 422, domain.CodeInvalidField},
		{"missing event", "tallyfy", "application/json", `{"task_id":"t"}`, nil, 422, domain.CodeMissingField},
		{"missing task_id", "tallyfy", "application/json", `{"event":"task.completed","completed_at":"2024-01-15T10:30:00Z"}`, nil, 422, domain.CodeMissingField},
		{"bad timestamp", "tallyfy", "application/json", `{"event":"task.completed","task_id":"t","completed_at":"15/01/2024"}`, nil, 422, domain.CodeInvalidField},
		{"wrong type", "tallyfy", "application/json", `{"event":"task.completed","task_id":7,"completed_at":"2024-01-15T10:30:00Z"}`, nil, 422, domain.CodeInvalidField},
		{"unusable key", "tallyfy", "application/json", valid, []string{"Idempotency-Key", "tab\there"}, 422, domain.CodeInvalidKey},
		{"key reused for another body", "tallyfy", "application/json", completion("t2", "2024-01-15T10:30:00Z"), []string{"Idempotency-Key", "used"}, 422, httpjson.CodeKeyReused},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodPost, b.url+"/v1/webhooks/"+tt.source, strings.NewReader(tt.body))
		if tt.contentType != "" {
			req.Header.Set("Content-Type", tt.contentType)
		}
		for i := 0; i+1 < len(tt.headers); i += 2 {
			req.Header.Set(tt.headers[i], tt.headers[i+1])
		}
		r := do(t, req)
		if r.Status != tt.status || r.Error.Code != tt.code || r.Error.Message == "" {
			t.Errorf("%s: got %d %q %q, want %d %q", tt.name, r.Status, r.Error.Code, r.Error.Message, tt.status, tt.code)
		}
	}
	if n := b.messages(t); n != 1 {
		t.Errorf("stream holds %d events after rejected requests, want only the setup one", n)
	}
}

func TestStreamOutageAnswers503AndRecovers(t *testing.T) {
	t.Parallel()
	srv := testenv.NewNATSServer(t)
	b := setup(t, func(c *config.Config) {
		c.NATSURL = srv.URL()
		c.PublishTimeout = 500 * time.Millisecond
	})
	b.svc.Start()
	before := b.scrape(t)
	if r := b.post(t, "tallyfy", completion("before", "2024-01-15T10:30:00Z")); r.Status != http.StatusAccepted {
		t.Fatalf("before the outage: %+v", r)
	}
	srv.Stop()
	unavailable := 5.0
	for i := range 5 {
		r := b.post(t, "tallyfy", completion("during", fmt.Sprintf("2024-01-15T10:3%d:00Z", i)))
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || r.Error.Code != "stream_unavailable" {
			t.Fatalf("during the outage: %+v, want 503 with Retry-After", r)
		}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// A sender retrying on 503 gets through once the client has reconnected.
	var r reply
	for range 200 {
		if r = b.post(t, "tallyfy", completion("during", "2024-01-15T10:30:00Z")); r.Status != http.StatusServiceUnavailable {
			break
		}
		unavailable++
		time.Sleep(50 * time.Millisecond)
	}
	// A 503 whose publish was in fact stored makes the retry a duplicate:
	// the sender sees the same sequence either way.
	accepted := 2.0
	if r.Status == http.StatusOK && r.Duplicate {
		accepted = 1
	} else if r.Status != http.StatusAccepted {
		t.Fatalf("after the outage: %+v, want 202 (or 200 duplicate) at seq 2", r)
	}
	if r.StreamSeq != 2 {
		t.Fatalf("after the outage: %+v, want seq 2", r)
	}
	if n := b.messages(t); n != 2 {
		t.Errorf("stream holds %d events, want 2 (the one before the outage survived the restart)", n)
	}
	after := b.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"taskledger_webhooks_total", []string{"source", "tallyfy", "outcome", "unavailable"}, unavailable},
		{"taskledger_webhooks_total", []string{"source", "tallyfy", "outcome", "accepted"}, accepted},
		{"taskledger_jetstream_publish_duration_seconds", []string{"outcome", "failed"}, unavailable},
		{"taskledger_http_requests_total", []string{"route", "POST /v1/webhooks/{source}", "code", "503"}, unavailable},
	} {
		if got := delta(t, before, after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v: +%v, want +%v", c.name, c.labels, got, c.want)
		}
	}
	// The projection consumers recover by themselves too, and apply both.
	b.waitCaughtUp(t)
	for _, task := range []string{"before", "during"} {
		var h struct {
			Completions []struct{} `json:"completions"`
		}
		getJSON(t, b.url+"/v1/tasks/"+task+"/completions", &h)
		if len(h.Completions) != 1 {
			t.Errorf("%s has %d completions after the outage, want 1", task, len(h.Completions))
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		req, _ := http.NewRequest(http.MethodGet, b.url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}
