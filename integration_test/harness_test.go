package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
)

// bundle is one test's running taskledger: its HTTP API and its stream.
type bundle struct {
	env    *testenv.Env
	svc    *service.Service
	url    string
	js     jetstream.JetStream
	stream string
}

// setup starts taskledger on a private database and stream; adjust may
// change the configuration first.
func setup(t testing.TB, adjust func(*config.Config)) *bundle {
	t.Helper()
	env := testenv.New(t)
	cfg := env.Config()
	if adjust != nil {
		adjust(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Registered first so that it runs last, after the service has closed.
	_, js := testenv.ConnectURL(t, cfg.NATSURL)
	env.DeleteStreamOnCleanup(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := service.Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("open service: %v", err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		srv.Close()
		svc.Close()
	})
	return &bundle{env: env, svc: svc, url: srv.URL, js: js, stream: cfg.Stream}
}

type reply struct {
	Status    int
	Header    http.Header
	StreamSeq uint64 `json:"stream_seq"`
	DedupKey  string `json:"dedup_key"`
	Duplicate bool   `json:"duplicate"`
	State     string `json:"status"`
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

// messages is the number of events stored in the test's stream.
func (b *bundle) messages(t testing.TB) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func completion(task, at string) string {
	return `{"event":"task.completed","task_id":"` + task + `","process_id":"p1","completed_at":"` + at +
		`","completed_by":"user@example.com"}`
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
