package postgres_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

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
	pool, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var name string
	err = pool.QueryRow(ctx, "SELECT current_database()").Scan(&name)
	pool.Close()
	if err != nil || name != strings.TrimPrefix(u.Path, "/") {
		t.Fatalf("connected to %q (%v), want %s", name, err, u.Path)
	}
	admin, err := postgres.Open(ctx, testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenExplainsAnUnreachableServer(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/taskledger?sslmode=disable&connect_timeout=2")
	if err == nil || !strings.Contains(err.Error(), "cannot reach Postgres at 127.0.0.1:1") ||
		!strings.Contains(err.Error(), "TASKLEDGER_DATABASE_URL") {
		t.Fatalf("err = %v, want an explanation naming the address and the variable", err)
	}
}
