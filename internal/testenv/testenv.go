// Package testenv gives each test a private Postgres database and JetStream
// stream on real servers. Servers are chosen once per test binary, in order:
//
//  1. TASKLEDGER_TEST_DATABASE_URL and TASKLEDGER_TEST_NATS_URL;
//  2. containers started with testcontainers, when a Docker daemon answers;
//  3. the local Postgres on 127.0.0.1:5432 and an in-process nats-server.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/testcontainers/testcontainers-go"
	tcnats "github.com/testcontainers/testcontainers-go/modules/nats"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/migrations"
)

// Env is one test's private database and stream.
type Env struct {
	// DatabaseURL points at a database created for this test and dropped
	// after it.
	DatabaseURL string
	// NATSURL points at the shared JetStream server.
	NATSURL string
	// Stream and SubjectPrefix name a stream private to this test.
	Stream, SubjectPrefix string
}

type servers struct {
	adminURL string // a Postgres URL whose role may create databases
	natsURL  string
	err      error
}

var (
	shared     servers
	sharedOnce sync.Once
)

// New returns a fresh Env, skipping nothing: if no server can be found or
// started the test fails with the reason.
func New(t testing.TB) *Env {
	t.Helper()
	sharedOnce.Do(func() { shared = chooseServers() })
	if shared.err != nil {
		t.Fatalf("testenv: %v", shared.err)
	}
	id := randomID()
	return &Env{
		DatabaseURL:   NewDatabase(t),
		NATSURL:       shared.natsURL,
		Stream:        "T_" + strings.ToUpper(id),
		SubjectPrefix: "t" + id + ".events",
	}
}

// Config is the service configuration for this Env: its database and
// stream, a short publish timeout, and no embedded server.
func (e *Env) Config() config.Config {
	cfg := config.Default()
	cfg.DatabaseURL = e.DatabaseURL
	cfg.NATSURL = e.NATSURL
	cfg.Stream = e.Stream
	cfg.SubjectPrefix = e.SubjectPrefix
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.PublishTimeout = 2 * time.Second
	return cfg
}

// NewDatabase creates an empty database for t and drops it when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	sharedOnce.Do(func() { shared = chooseServers() })
	if shared.err != nil {
		t.Fatalf("testenv: %v", shared.err)
	}
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(shared.adminURL)
	if err != nil {
		t.Fatalf("testenv: admin URL: %v", err)
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: connect to Postgres at %s:%d: %v", cfg.Host, cfg.Port, err)
	}
	defer admin.Close(ctx)
	name := "tl_test_" + randomID()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return withDatabase(shared.adminURL, name)
}

// DeleteStreamOnCleanup removes the Env's stream when t ends.
func (e *Env) DeleteStreamOnCleanup(t testing.TB, js jetstream.JetStream) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, e.Stream)
	})
}

func chooseServers() servers {
	s := servers{
		adminURL: os.Getenv("TASKLEDGER_TEST_DATABASE_URL"),
		natsURL:  os.Getenv("TASKLEDGER_TEST_NATS_URL"),
	}
	if s.adminURL != "" && s.natsURL != "" {
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if dockerAnswers(ctx) {
		if s.adminURL == "" {
			s.adminURL, s.err = startPostgresContainer(ctx)
		}
		if s.natsURL == "" && s.err == nil {
			s.natsURL, s.err = startNATSContainer(ctx)
		}
		return s
	}
	if s.adminURL == "" {
		s.adminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	if s.natsURL == "" {
		srv, err := startProcessNATS()
		if err != nil {
			s.err = err
			return s
		}
		s.natsURL = srv.ClientURL()
	}
	return s
}

func dockerAnswers(ctx context.Context) bool {
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false
	}
	defer provider.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return provider.Health(ctx) == nil
}

// The images the containers run: the versions the suite passes against
// without Docker (the local Postgres 15 and the in-process nats-server),
// and the ones docker-compose.yml pins.
const (
	PostgresImage = "postgres:15.20-alpine"
	NATSImage     = "nats:2.15.2-alpine"
)

func startPostgresContainer(ctx context.Context) (string, error) {
	c, err := tcpostgres.Run(ctx, PostgresImage,
		tcpostgres.WithDatabase("postgres"), tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"), tcpostgres.BasicWaitStrategies())
	if err != nil {
		return "", fmt.Errorf("start Postgres container: %w", err)
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}

func startNATSContainer(ctx context.Context) (string, error) {
	c, err := tcnats.Run(ctx, NATSImage)
	if err != nil {
		return "", fmt.Errorf("start NATS container: %w", err)
	}
	return c.ConnectionString(ctx)
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withDatabase replaces the database name in a postgres:// URL.
func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(fmt.Sprintf("testenv: database URL %q: %v", rawURL, err))
	}
	u.Path = "/" + name
	return u.String()
}

// ConnectURL opens a NATS connection to url, closed with t.
func ConnectURL(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("testenv: connect NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// NewMigratedPool returns a pool on a fresh, migrated database for t.
func NewMigratedPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return MigratedPool(t, NewDatabase(t))
}

// MigratedPool migrates the database at databaseURL and returns a pool on
// it, closed when t ends.
func MigratedPool(t testing.TB, databaseURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := postgres.Open(context.Background(), databaseURL, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// Rows runs query and returns every row's values, for comparing tables.
func Rows(t testing.TB, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, query string, args ...any) [][]any {
	t.Helper()
	rows, err := db.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// SharedTempDir is a fresh directory, removed after the test, that other
// users may pass through but not list (t.TempDir is private to its owner):
// for a Postgres cluster run as an unprivileged user under it.
func SharedTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "taskledger-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}
