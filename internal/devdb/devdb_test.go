package devdb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/testenv"
)

// unusedPort is a loopback port nothing listened on a moment ago.
func unusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPrivateCluster starts a private cluster with the server programs
// installed on this machine (as an unprivileged user when run as root),
// connects to it with the configured URL, stops it, and starts it again
// from the same directory without a second initdb.
func TestPrivateCluster(t *testing.T) {
	if findBinDir(nil) == "" {
		t.Skip("Postgres's server programs (initdb, pg_ctl) are not installed")
	}
	ctx := context.Background()
	dir := filepath.Join(testenv.SharedTempDir(t), "data", "postgres")
	for attempt := 0; ; attempt++ {
		url := fmt.Sprintf("postgres://taskledger@127.0.0.1:%d/postgres?sslmode=disable", unusedPort(t))
		started, err := Ensure(ctx, Options{URL: url, Dir: dir, Docker: "no-such-docker", Log: zerolog.Nop()})
		if err != nil && strings.Contains(err.Error(), "already in use") && attempt < 3 {
			continue // another process took the port since unusedPort saw it free
		}
		if err != nil {
			t.Fatal(err)
		}
		query(t, url)
		if err := started.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if answers(ctx, mustParse(t, url)) {
			t.Fatal("the cluster still answers after Stop")
		}
		again, err := Ensure(ctx, Options{URL: url, Dir: dir, Docker: "no-such-docker", Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		query(t, url)
		// A server that answers is used as it is, and not stopped by its user.
		same, err := Ensure(ctx, Options{URL: url, Dir: t.TempDir(), BinDirs: []string{}, Docker: "no-such-docker", Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if err := same.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		query(t, url)
		if err := again.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		return
	}
}

func mustParse(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func query(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
}

// TestNothingToStart: with no server, no server programs and no Docker,
// the error is the install advice.
func TestNothingToStart(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/taskledger", unusedPort(t))
	_, err := Ensure(context.Background(), Options{URL: url, Dir: t.TempDir(), BinDirs: []string{}, Log: zerolog.Nop()})
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("err = %v, want ErrNoPostgres", err)
	}
	for _, want := range []string{"apt-get install postgresql", "brew install postgresql", "Docker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the advice lacks %q: %v", want, err)
		}
	}
}

// TestRemoteIsNotStarted: a server elsewhere that does not answer is not
// something to start here.
func TestRemoteIsNotStarted(t *testing.T) {
	_, err := Ensure(context.Background(), Options{URL: "postgres://postgres@192.0.2.1:5432/taskledger?connect_timeout=1", Dir: t.TempDir(), Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), "not this machine") {
		t.Fatalf("err = %v", err)
	}
}
