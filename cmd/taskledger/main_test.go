package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/taskledger/taskledger/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeEmbeddedAndShutDown runs `taskledger serve` as the README's first
// command does (embedded NATS), takes a webhook, then stops it the way
// SIGTERM does and expects a clean exit.
func TestServeEmbeddedAndShutDown(t *testing.T) {
	dbURL := testenv.NewDatabase(t)
	serveAndStop(t, "serve", "-data-dir", t.TempDir(), "-database-url", dbURL, "-embedded-nats-addr", freeAddr(t))
}

// serveAndStop runs the command (serve or dev) until it is ready, takes a
// webhook, then cancels it as SIGINT does and expects a clean exit.
func serveAndStop(t *testing.T, args ...string) {
	t.Helper()
	addr := freeAddr(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(args, "-http-addr", addr, "-log-level", "warn"), io.Discard, io.Discard)
	}()
	base := "http://" + addr
	var ready bool
	for range 1500 {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if ready = resp.StatusCode == http.StatusOK; ready {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited early: %v", args[0], err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !ready {
		t.Fatalf("%s never became ready", args[0])
	}
	resp, err := http.Post(base+"/v1/webhooks/tallyfy", "application/json", strings.NewReader(
		`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %d", resp.StatusCode)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("%s returned %v after shutdown, want nil", args[0], err)
	}
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
