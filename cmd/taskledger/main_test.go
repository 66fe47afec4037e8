package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/testenv"
)

// syncBuffer is a bytes.Buffer that a command writes its logs to while
// the test reads them.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listeningAddr is the address a serve's "taskledger listening" log line
// names, or "" before that line.
func listeningAddr(logs string) string {
	for _, line := range strings.Split(logs, "\n") {
		var entry struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "taskledger listening" {
			return entry.Addr
		}
	}
	return ""
}

// TestServeEmbeddedAndShutDown runs `taskledger serve` as the README's first
// command does (embedded NATS), takes a webhook, then stops it the way
// SIGTERM does and expects a clean exit.
func TestServeEmbeddedAndShutDown(t *testing.T) {
	dbURL := testenv.NewDatabase(t)
	// Flags without a command run serve.
	serveAndStop(t, "-data-dir", t.TempDir(), "-database-url", dbURL, "-embedded-nats-addr", "")
}

// serveAndStop runs the command (serve or dev) until it is ready, takes a
// webhook, then cancels it as SIGINT does and expects a clean exit.
func serveAndStop(t *testing.T, args ...string) {
	t.Helper()
	base, stop := serving(t, args...)
	resp, err := http.Post(base+"/v1/webhooks/tallyfy", "application/json", strings.NewReader(
		`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("%s returned %v after shutdown, want nil", args[0], err)
	}
}

// serving runs the command until it is ready, and returns its base URL and
// a function that cancels it as SIGINT does and returns what it returned.
func serving(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	base, stop, logs, exit := startServing(t, args...)
	if stop == nil {
		t.Fatalf("%s exited early: %v\n%s", args[0], exit, logs)
	}
	return base, stop
}

// startServing runs the command until it answers ready or exits. When
// ready it returns the base URL and a function that cancels it as SIGINT
// does and returns what it returned; when it exited first, a nil function,
// what it logged and what it returned.
func startServing(t *testing.T, args ...string) (base string, stop func() error, logs string, exit error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out := &syncBuffer{}
	go func() {
		// Port 0: the command binds a free port and logs which.
		done <- run(ctx, append(args, "-http-addr", "127.0.0.1:0", "-log-level", "info"), io.Discard, out)
	}()
	exited := false
	testenv.Poll(t, time.Minute, args[0]+" to answer ready", func() bool {
		select {
		case exit = <-done:
			exited = true
			return true
		default:
		}
		if base == "" {
			if addr := listeningAddr(out.String()); addr != "" {
				base = "http://" + addr
			}
			return false
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if exited {
		cancel()
		return "", nil, out.String(), exit
	}
	return base, func() error {
		cancel()
		return <-done
	}, "", nil
}

func TestRunRejectsBadInvocations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"migrate without up", []string{"migrate"}, "usage: taskledger migrate up"},
		{"invalid flag value", []string{"serve", "-http-addr", "nonsense"}, "http-addr"},
		{"unknown flag", []string{"serve", "-no-such-flag"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			err := run(context.Background(), tt.args, io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Errorf("run(%v) = %v (stderr %q), want an error containing %q", tt.args, err, stderr.String(), tt.want)
			}
		})
	}
}

func TestMigrateUpIsIdempotent(t *testing.T) {
	t.Parallel()
	dbURL := testenv.NewDatabase(t)
	for range 2 {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"migrate", "up", "-database-url", dbURL}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "migrations applied") {
			t.Errorf("output %q", out.String())
		}
	}
}

// TestHelpOfEveryCommand: -h succeeds and shows the command's own flags
// before the settings it uses.
func TestHelpOfEveryCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		own  []string // the command's own flags, in order
	}{
		{[]string{"serve", "-h"}, nil},
		{[]string{"dev", "-h"}, nil},
		{[]string{"migrate", "up", "-h"}, nil},
		{[]string{"migrate", "-h"}, nil},
		{[]string{"history", "-h"}, []string{"--json", "--policy string"}},
		{[]string{"replay", "--help"}, []string{"--projection string"}},
		{[]string{"dead-letters", "list", "-h"}, []string{"--all", "--json"}},
		{[]string{"dead-letters", "retry", "-h"}, nil},
		{[]string{"bench", "-h"}, []string{"--concurrency int", "--events int"}},
		{[]string{"healthcheck", "-h"}, []string{"--url string"}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := run(context.Background(), tt.args, &out, io.Discard); err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		help := out.String()
		if !strings.HasPrefix(help, "Usage: taskledger "+tt.args[0]) {
			t.Errorf("%v: help starts %q", tt.args, help[:min(len(help), 40)])
		}
		settings := strings.Index(help, "Settings")
		if settings < 0 || tt.args[0] != "healthcheck" && !regexp.MustCompile(`--database-url string +TASKLEDGER_DATABASE_URL`).MatchString(help[settings:]) {
			t.Errorf("%v: no settings section naming flags and variables:\n%s", tt.args, help)
		}
		at := 0
		for _, flag := range tt.own {
			i := strings.Index(help[at:], "  "+flag+" ")
			if i < 0 || at+i > settings {
				t.Errorf("%v: %q is not among its own flags, before the settings:\n%s", tt.args, flag, help)
				break
			}
			at += i
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"--help"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, io.Discard); err != nil || !strings.Contains(out.String(), "taskledger dead-letters list") {
			t.Errorf("%v: %v\n%s", args, err, out.String())
		}
	}
	// The server's help lists every setting, numbers typed as numbers.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"serve", "-h"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--batch-size int", "--max-body-bytes int", "--stream-replicas int", "--shutdown-timeout duration",
		"TASKLEDGER_SHUTDOWN_TIMEOUT", "--nats-sync policy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve -h lacks %q:\n%s", want, out.String())
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "taskledger ") ||
		!strings.Contains(out.String(), "go1.") {
		t.Errorf("version: %v %q", err, out.String())
	}
}

// TestConfigProblemsAreOneLineEach: an unparsable number is one line
// naming the flag and the variable, with no second line about the same
// setting; an even replica count is refused before NATS sees it.
func TestConfigProblemsAreOneLineEach(t *testing.T) {
	t.Setenv("TASKLEDGER_BATCH_SIZE", "abc")
	t.Setenv("TASKLEDGER_STREAM_REPLICAS", "2")
	err := run(context.Background(), []string{"serve"}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("serve accepted a batch size of abc")
	}
	want := `--batch-size (TASKLEDGER_BATCH_SIZE): "abc" is not a whole number` + "\n" +
		`--stream-replicas (TASKLEDGER_STREAM_REPLICAS): 2: want 1, 3 or 5 (an even count adds no fault tolerance)`
	if err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestBoundHeapFollowsTheBudgetUnlessGOMEMLIMITIsSet(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	cfg := config.Default()
	for _, c := range []struct{ budget, want int64 }{{cfg.MaxInflightBytes, minHeapLimit}, {1 << 30, 1<<30 + heapBeyondBodies}, {1 << 20, minHeapLimit}} {
		cfg.MaxInflightBytes = c.budget
		if limit, set := boundHeap(cfg); !set || limit != c.want || debug.SetMemoryLimit(-1) != limit {
			t.Errorf("boundHeap with a budget of %d = %d, %v; want the limit set to %d", c.budget, limit, set, c.want)
		}
	}
	debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "1GiB")
	if _, set := boundHeap(cfg); set || debug.SetMemoryLimit(-1) != before {
		t.Error("boundHeap changed the limit although GOMEMLIMIT sets one")
	}
}

func TestPaceCollectorUnlessGOGCIsSet(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	t.Setenv("GOGC", "")
	if !paceCollector() || debug.SetGCPercent(100) != collectorPace {
		t.Errorf("GOGC unset: the collector's pace is not %d", collectorPace)
	}
	t.Setenv("GOGC", "50")
	if paceCollector() || debug.SetGCPercent(100) != 100 {
		t.Error("paceCollector changed the pace although GOGC sets one")
	}
}
