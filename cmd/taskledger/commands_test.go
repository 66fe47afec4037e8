package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/loadgen"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// running is a service with its consumers, and the flags that point the
// commands at its database and stream.
type running struct {
	svc   *service.Service
	url   string
	cfg   config.Config
	flags []string
}

func startService(t *testing.T) *running {
	t.Helper()
	env := testenv.New(t)
	cfg := env.Config()
	cfg.AdminToken = "test-admin-token"
	_, js := testenv.ConnectURL(t, cfg.NATSURL)
	env.DeleteStreamOnCleanup(t, js)
	svc, err := service.Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	svc.Start()
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		srv.Close()
		svc.Close(context.Background())
	})
	return &running{svc: svc, url: srv.URL, cfg: cfg, flags: []string{"-database-url", cfg.DatabaseURL, "-nats-url", cfg.NATSURL,
		"-stream", cfg.Stream, "-subject-prefix", cfg.SubjectPrefix, "-log-level", "error"}}
}

func (r *running) post(t *testing.T, body string) {
	t.Helper()
	resp, err := http.Post(r.url+"/v1/webhooks/tallyfy", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post %s: %d", body, resp.StatusCode)
	}
}

// waitProjected waits until every projection has applied the whole stream.
func (r *running) waitProjected(t *testing.T) {
	t.Helper()
	if _, err := loadgen.WaitCaughtUp(context.Background(), r.svc.Lag, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// cli runs a command with the service's flags appended and returns its
// output and error.
func (r *running) cli(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), append(args, r.flags...), &out, io.Discard)
	return out.String(), err
}

func TestHistoryCommand(t *testing.T) {
	t.Parallel()
	r := startService(t)
	r.post(t, `{"event":"task.completed","task_id":"t1","process_id":"p1","completed_at":"2024-01-15T10:30:00Z","completed_by":"ann@example.com"}`)
	r.post(t, `{"event":"task.reopened","task_id":"t1","reopened_at":"2024-01-16T10:30:00Z"}`)
	r.post(t, `{"event":"task.completed","task_id":"t1","process_id":"p1","completed_at":"2024-01-17T10:30:00Z","completed_by":"bob@example.com"}`)
	r.waitProjected(t)

	out, err := r.cli("history", "t1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"task t1 · policy all · 2 completion(s) · not reopened", "COMPLETED AT",
		"2024-01-15T10:30:00Z", "ann@example.com", "2024-01-17T10:30:00Z", "bob@example.com"} {
		if !strings.Contains(out, want) {
			t.Errorf("history table lacks %q:\n%s", want, out)
		}
	}
	out, err = r.cli("history", "--policy", "first", "--json", "t1")
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Policy      string `json:"policy"`
		Completions []struct {
			CompletedBy string `json:"completed_by"`
		} `json:"completions"`
	}
	if err := json.Unmarshal([]byte(out), &view); err != nil || view.Policy != "first" ||
		len(view.Completions) != 1 || view.Completions[0].CompletedBy != "ann@example.com" {
		t.Errorf("history --json: %v %+v\n%s", err, view, out)
	}
	if _, err := r.cli("history", "nope"); err == nil || !strings.Contains(err.Error(), "no completion") {
		t.Errorf("unknown task: %v", err)
	}
	if _, err := r.cli("history", "t1", "--policy", "last"); err == nil || !strings.Contains(err.Error(), "unknown policy") {
		t.Errorf("bad policy: %v", err)
	}
	if _, err := r.cli("history"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("no task: %v", err)
	}
}

func TestDeadLettersCommand(t *testing.T) {
	t.Parallel()
	r := startService(t)
	if out, err := r.cli("dead-letters", "list"); err != nil || !strings.Contains(out, "no dead letters") {
		t.Fatalf("empty list: %q %v", out, err)
	}
	nc, _ := testenv.ConnectURL(t, r.cfg.NATSURL)
	if err := nc.Publish(r.cfg.SubjectPrefix+".tallyfy", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	r.post(t, `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	r.waitProjected(t)

	out, err := r.cli("dead-letters", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "body is not valid JSON") != len(projections.All) {
		t.Errorf("want one dead letter per projection:\n%s", out)
	}
	out, err = r.cli("dead-letters", "list", "--json")
	var view struct {
		DeadLetters []struct {
			ID   int64  `json:"id"`
			Body string `json:"body"`
		} `json:"dead_letters"`
	}
	if err != nil || json.Unmarshal([]byte(out), &view) != nil || len(view.DeadLetters) != 3 || view.DeadLetters[0].Body != "not json" {
		t.Fatalf("list --json: %v %+v\n%s", err, view, out)
	}
	// The same document as the API's answer.
	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/dead-letters", nil)
	req.Header.Set("Authorization", "Bearer "+r.cfg.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	fromAPI, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var cli, api any
	if json.Unmarshal([]byte(out), &cli) != nil || json.Unmarshal(fromAPI, &api) != nil || !reflect.DeepEqual(cli, api) {
		t.Errorf("list --json differs from GET /v1/dead-letters:\n%s\n%s", out, fromAPI)
	}
	if _, err := r.cli("dead-letters", "retry", "1"); err == nil || !strings.Contains(err.Error(), "still fails") {
		t.Errorf("retry of an undecodable event: %v", err)
	}
	if _, err := r.cli("dead-letters", "retry", "999"); err == nil || !strings.Contains(err.Error(), "no such dead letter") {
		t.Errorf("retry of an unknown id: %v", err)
	}
	if _, err := r.cli("dead-letters", "retry", "x"); err == nil || !strings.Contains(err.Error(), "not a number") {
		t.Errorf("retry of a bad id: %v", err)
	}
	if _, err := r.cli("dead-letters", "purge"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("unknown subcommand: %v", err)
	}
}

func TestReplayCommand(t *testing.T) {
	t.Parallel()
	r := startService(t)
	for _, at := range []string{"2024-01-15T10:30:00Z", "2024-01-14T10:30:00Z"} {
		r.post(t, `{"event":"task.completed","task_id":"t1","completed_at":"`+at+`"}`)
	}
	r.waitProjected(t)
	before := testenv.Rows(t, r.svc.Pool(), "SELECT * FROM completions_first.completions")
	if _, err := r.svc.Pool().Exec(context.Background(), "TRUNCATE completions_first.completions"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli("replay", "--projection", "completions_first"); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Rows(t, r.svc.Pool(), "SELECT * FROM completions_first.completions"); len(after) != 1 ||
		len(before) != 1 || after[0][2] != before[0][2] {
		t.Errorf("replayed %v, want %v", after, before)
	}
	if _, err := r.cli("replay", "--projection", "nope"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("unknown projection: %v", err)
	}
	if _, err := r.cli("replay", "--projection", "completions_first", "--adopt-stream"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("a projection and --adopt-stream: %v", err)
	}

	// Pointed at another stream, replay refuses as serve does, naming both.
	other := &testenv.Env{Stream: r.cfg.Stream + "_OTHER"}
	_, js := testenv.ConnectURL(t, r.cfg.NATSURL)
	other.DeleteStreamOnCleanup(t, js)
	elsewhere := append(slices.Clone(r.flags), "-stream", other.Stream, "-subject-prefix", r.cfg.SubjectPrefix+"x")
	err := run(context.Background(), append([]string{"replay", "--projection", "completions_first"}, elsewhere...), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), adoptCommand) ||
		!strings.Contains(err.Error(), r.cfg.Stream+" created") || !strings.Contains(err.Error(), other.Stream+" created") {
		t.Errorf("replay against another stream: %v", err)
	}
	// The remedy it names makes the database follow that stream.
	if err := run(context.Background(), append([]string{"replay", "--adopt-stream"}, elsewhere...), io.Discard, io.Discard); err != nil {
		t.Fatalf("replay --adopt-stream: %v", err)
	}
	if rows := testenv.Rows(t, r.svc.Pool(), "SELECT stream_name FROM stream_identity"); len(rows) != 1 || rows[0][0] != other.Stream {
		t.Errorf("after adoption the database follows %v", rows)
	}
	if rows := testenv.Rows(t, r.svc.Pool(), "SELECT * FROM completions_first.completions"); len(rows) != 0 {
		t.Errorf("after adopting an empty stream: %v", rows)
	}
}

// TestReplayAfterTheDataDirIsWiped follows the README's remedy for a
// wiped data directory (`make clean`): replay of one projection refuses as
// serve does, naming the stream the database follows, and writes nothing;
// replay --adopt-stream rebuilds from a new, empty stream and makes the
// database follow it; serve then starts.
func TestReplayAfterTheDataDirIsWiped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := config.Default()
	cfg.DatabaseURL, cfg.DataDir, cfg.EmbeddedNATSAddr = testenv.NewDatabase(t), t.TempDir(), netip.AddrPort{}
	cfg.NATSSync = config.SyncPolicy{Interval: time.Minute}
	svc, err := service.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	svc.Start()
	srv := httptest.NewServer(svc.Handler())
	r := &running{svc: svc, url: srv.URL, cfg: cfg}
	r.post(t, `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	r.waitProjected(t)
	followed := testenv.Rows(t, svc.Pool(), "SELECT stream_created FROM stream_identity")
	srv.Close()
	svc.Close(ctx)
	if err := os.RemoveAll(cfg.DataDir); err != nil { // what `make clean` does
		t.Fatal(err)
	}

	flags := []string{"-database-url", cfg.DatabaseURL, "-data-dir", cfg.DataDir, "-embedded-nats-addr", "",
		"-nats-sync", "1m", "-log-level", "error"}
	err = run(ctx, append([]string{"replay", "--projection", "completions_all"}, flags...), io.Discard, io.Discard)
	for _, want := range []string{"data directory " + cfg.DataDir, "the database follows stream TASK_EVENTS created",
		"(checkpoints up to 1), but there is no stream TASK_EVENTS here", "hint: ", "TASKLEDGER_DATA_DIR", adoptCommand} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("replay of a wiped data directory: %v, want it to say %q", err, want)
		}
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused replay wrote into the data directory: %v", err)
	}

	if err := run(ctx, append([]string{"replay", "--adopt-stream"}, flags...), io.Discard, io.Discard); err != nil {
		t.Fatalf("replay --adopt-stream on the wiped data directory: %v", err)
	}
	served, err := service.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("serve after adopting the new stream: %v", err)
	}
	defer served.Close(ctx)
	if now := testenv.Rows(t, served.Pool(), "SELECT stream_created FROM stream_identity"); reflect.DeepEqual(now, followed) {
		t.Errorf("the database still follows the wiped stream %v", now)
	}
	if rows := testenv.Rows(t, served.Pool(), "SELECT * FROM completions_all.completions"); len(rows) != 0 {
		t.Errorf("after adopting the empty stream: %v", rows)
	}
}

func TestBenchCommand(t *testing.T) {
	dbURL := testenv.NewDatabase(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"bench", "--events", "300", "--concurrency", "4", "--rebuild",
		"-database-url", dbURL}, &out, io.Discard)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	for _, want := range []string{"JetStream publish + group fsync, raw (ceiling)", "Postgres COPY, raw (ceiling)",
		"Webhook ingest over HTTP", "x publish", "Projections, each of 3 policies", "x COPY",
		"Rebuild of completions_all", "0 other", "caught up", "rebuild: started with", "swapped in"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench output lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(context.Background(), []string{"bench", "--events", "0"}, io.Discard, io.Discard); err == nil {
		t.Error("bench accepted zero events")
	}
}

func TestRenderProgress(t *testing.T) {
	t.Parallel()
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	line := renderProgress(consumers.Progress{Projection: "completions_all", Applied: 250, Target: 1000, Started: start},
		start.Add(10*time.Second))
	for _, want := range []string{"completions_all [=======", " 25.0% 250/1000", "25 events/s", "ETA 30s"} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
	done := renderProgress(consumers.Progress{Projection: "p", Applied: 5, Target: 5, Started: start, Done: true}, start.Add(time.Second))
	if !strings.Contains(done, "100.0%") {
		t.Errorf("final line %q", done)
	}
	empty := renderProgress(consumers.Progress{Projection: "p", Started: start, Done: true}, start)
	if !strings.Contains(empty, "100.0% 0/0") {
		t.Errorf("empty stream line %q", empty)
	}
}

// TestProgressLineKeepsLogsAboveTheBar: a log line clears the bar, is
// printed, and the bar is drawn again under it.
func TestProgressLineKeepsLogsAboveTheBar(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	l := &progressLine{out: &out}
	l.show("bar 1")
	log := loggerTo("info", l, true)
	log.Info().Msg("nats reconnected")
	l.show("bar 2")
	l.finish("done")
	fmt.Fprint(l, "after\n")
	got := out.String()
	want := []string{clearLine + "bar 1", clearLine, "nats reconnected", "\nbar 1", clearLine + "bar 2", "\ndone\n", clearLine + "after\n"}
	at := 0
	for _, w := range want {
		i := strings.Index(got[at:], w)
		if i < 0 {
			t.Fatalf("output %q lacks %q after position %d", got, w, at)
		}
		at += i + len(w)
	}
	if !strings.HasSuffix(got, "after\n") {
		t.Errorf("output %q: the bar came back after finish", got)
	}
}

func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	r := startService(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "--url", r.url + "/readyz"}, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "ready") {
		t.Errorf("healthcheck of a ready service: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"healthcheck", "--url", r.url + "/no-such-path"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "answered 404") {
		t.Errorf("healthcheck of a 404: %v", err)
	}
	if err := run(context.Background(), []string{"healthcheck", "-http-addr", "127.0.0.1:1"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "http://127.0.0.1:1/readyz") {
		t.Errorf("healthcheck of nothing: %v", err)
	}
}
