package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/internal/testenv"
)

func TestOpenCreatesAMissingDatabase(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path += "_created" // a sibling that does not exist yet
	ctx := context.Background()
	var logged strings.Builder
	pool, err := postgres.Open(ctx, u.String(), zerolog.New(&logged))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var name string
	err = pool.QueryRow(ctx, "SELECT current_database()").Scan(&name)
	pool.Close()
	if err != nil || name != strings.TrimPrefix(u.Path, "/") {
		t.Fatalf("connected to %q (%v), want %s", name, err, u.Path)
	}
	if !strings.Contains(logged.String(), `"message":"database created"`) || !strings.Contains(logged.String(), name) {
		t.Errorf("the creation was not logged: %s", logged.String())
	}
	admin, err := postgres.Open(ctx, testenv.NewDatabase(t), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTellsAnUnreachableServer(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/taskledger?sslmode=disable&connect_timeout=2", zerolog.Nop())
	if !errors.Is(err, postgres.ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want ErrUnreachable naming the address", err)
	}
}

func TestOpenTellsARefusedRole(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("no_such_role_taskledger")
	for name, open := range map[string]func() error{
		"Open":         func() error { _, err := postgres.Open(context.Background(), u.String(), zerolog.Nop()); return err },
		"OpenMigrated": func() error { _, err := postgres.OpenMigrated(context.Background(), u.String()); return err },
	} {
		if err := open(); !errors.Is(err, postgres.ErrAuth) || errors.Is(err, postgres.ErrUnreachable) {
			t.Errorf("%s: err = %v, want ErrAuth", name, err)
		}
	}
}

// TestOpenMigratedCreatesNothing: the read-only commands' open neither
// creates a missing database nor migrates an empty one.
func TestOpenMigratedCreatesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	empty := testenv.NewDatabase(t)
	u, err := url.Parse(empty)
	if err != nil {
		t.Fatal(err)
	}
	u.Path += "_missing"
	if _, err := postgres.OpenMigrated(ctx, u.String()); !errors.Is(err, postgres.ErrNotMigrated) {
		t.Fatalf("missing database: err = %v, want ErrNotMigrated", err)
	}
	admin, err := postgres.Open(ctx, empty, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)",
		strings.TrimPrefix(u.Path, "/")).Scan(&exists); err != nil || exists {
		t.Fatalf("the missing database exists now (%v)", err)
	}
	if _, err := postgres.OpenMigrated(ctx, empty); !errors.Is(err, postgres.ErrNotMigrated) ||
		!strings.Contains(err.Error(), "run `taskledger migrate up`") {
		t.Fatalf("unmigrated database: err = %v, want ErrNotMigrated", err)
	}
	migrated := testenv.NewDatabase(t)
	testenv.MigratedPool(t, migrated)
	pool, err := postgres.OpenMigrated(ctx, migrated)
	if err != nil {
		t.Fatalf("migrated database: %v", err)
	}
	pool.Close()
}
