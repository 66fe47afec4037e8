package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
)

// TestDevStartsAPrivatePostgres runs `taskledger dev` (what `make run` runs)
// where no Postgres answers: it starts a private cluster under the data
// directory with the server programs installed here, serves, and on
// shutdown stops the cluster again.
func TestDevStartsAPrivatePostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Postgres cluster")
	}
	dataDir := filepath.Join(testenv.SharedTempDir(t), "data")
	// Postgres binds the port itself, so it is picked up front.
	var dbURL string
	base, stop := servingOnAPort(t, func(port int) []string {
		dbURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/taskledger?sslmode=disable&connect_timeout=2", port)
		return []string{"dev", "-data-dir", dataDir, "-database-url", dbURL, "-embedded-nats-addr", ""}
	})
	resp, err := http.Post(base+"/v1/webhooks/tallyfy", "application/json", strings.NewReader(
		`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("webhook answered %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("dev returned %v after shutdown, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "PG_VERSION")); err != nil {
		t.Errorf("no cluster under the data directory: %v", err)
	}
	if conn, err := pgx.Connect(context.Background(), dbURL); err == nil {
		conn.Close(context.Background())
		t.Error("the private cluster still answers after dev stopped")
	}
}

// TestOperatorErrors: each mistake an operator makes is told at once, with
// what to change.
func TestOperatorErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dbURL := testenv.NewDatabase(t)
	missing, wrongRole := mustParseURL(t, dbURL), mustParseURL(t, dbURL)
	missing.Path += "_missing"
	wrongRole.User = url.User("no_such_role_taskledger")
	emptyDir := t.TempDir()
	// A service holding a data directory, for a second one to find in use.
	held := config.Default()
	held.DataDir, held.DatabaseURL, held.EmbeddedNATSAddr = t.TempDir(), testenv.NewDatabase(t), netip.AddrPort{}
	holder, err := service.Open(context.Background(), held, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"busy embedded NATS port", []string{"serve", "-data-dir", t.TempDir(), "-database-url", dbURL,
			"-embedded-nats-addr", busy.Addr().String()},
			[]string{busy.Addr().String(), "TASKLEDGER_EMBEDDED_NATS_ADDR"}},
		{"data directory in use", []string{"serve", "-data-dir", held.DataDir, "-database-url", dbURL, "-embedded-nats-addr", ""},
			[]string{"data dir " + held.DataDir + ": in use by another taskledger process", "TASKLEDGER_DATA_DIR"}},
		{"unreachable NATS", []string{"serve", "-nats-url", "nats://127.0.0.1:1", "-database-url", dbURL},
			[]string{"cannot reach NATS at \"nats://127.0.0.1:1\"", "set TASKLEDGER_NATS_URL"}},
		{"unreachable Postgres", []string{"migrate", "up", "-database-url", "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"},
			[]string{"cannot reach Postgres at 127.0.0.1:1", "TASKLEDGER_DATABASE_URL", "make run"}},
		{"refused role", []string{"migrate", "up", "-database-url", wrongRole.String()},
			[]string{"the server refused the login", `user "no_such_role_taskledger"`, "check the user and password in TASKLEDGER_DATABASE_URL"}},
		{"history of a missing database", []string{"history", "t1", "-database-url", missing.String()},
			[]string{"not migrated: run `taskledger migrate up`"}},
		{"dead letters of a missing database", []string{"dead-letters", "list", "-database-url", missing.String()},
			[]string{"not migrated: run `taskledger migrate up`"}},
		{"history of an empty database", []string{"history", "t1", "-database-url", dbURL},
			[]string{"not migrated: run `taskledger migrate up`"}},
		{"offline replay of an empty data dir", []string{"replay", "--projection", "completions_all",
			"-data-dir", emptyDir, "-embedded-nats-addr", "", "-database-url", dbURL},
			[]string{"data directory " + emptyDir + " holds no stream TASK_EVENTS", "TASKLEDGER_DATA_DIR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			for _, want := range tt.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("run(%v) = %v, want an error containing %q", tt.args, err, want)
				}
			}
		})
	}
	// Nothing was created by the commands that only read.
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = current_database() || '_missing')").Scan(&exists); err != nil || exists {
		t.Errorf("a read-only command created the database (%v)", err)
	}
	if entries, err := os.ReadDir(emptyDir); err != nil || len(entries) != 0 {
		t.Errorf("replay wrote into the data directory it refused: %v %v", entries, err)
	}
}

func mustParseURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
