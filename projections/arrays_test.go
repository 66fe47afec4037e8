package projections

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/taskledger/taskledger/internal/testenv"
)

// TestColumnsReachPostgresAsPgxSendsThem sends each kind of column, NULLs,
// empty and odd values included, and compares what Postgres received with
// the same values as pgx encodes them: the batch statements store exactly
// what they stored when pgx encoded their arrays.
func TestColumnsReachPostgresAsPgxSendsThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	texts := []string{"task-1", "", "ünïcode ✓", `quote " backslash \ comma , brace {}`, "NULL"}
	stamps := []time.Time{
		time.Date(2024, 1, 15, 10, 0, 0, 123456789, time.UTC),                        // nanoseconds truncated
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", -5*3600)), // before Postgres's epoch
		time.Unix(0, 0),
	}
	text, textOrNull, empty := newColumn(textElements, 1), newColumn(textElements, 1), newColumn(textElements, 0)
	int8s, bools, bytea := newColumn(int8Elements, 1), newColumn(boolElements, 1), newColumn(byteaElements, 1)
	json, stamp, stampOrNull := newColumn(jsonElements, 1), newColumn(timeElements, 1), newColumn(timeElements, 1)
	var wantTextOrNull []pgtype.Text
	for _, s := range texts {
		text.text(s)
		textOrNull.textOrNull(s)
		wantTextOrNull = append(wantTextOrNull, pgtype.Text{String: s, Valid: s != ""})
	}
	ints := []int64{0, -1, 1 << 62, -1 << 63}
	for _, v := range ints {
		int8s.int8(v)
	}
	bools.bool(true)
	bools.bool(false)
	bytes := [][]byte{{}, {0, 1, 0xff}, []byte("body")}
	for _, b := range bytes {
		bytea.bytes(b)
	}
	json.bytes([]byte(`{"a":["b"]}`))
	json.bytes([]byte(`{}`))
	var wantStampOrNull []pgtype.Timestamptz
	for _, s := range stamps {
		stamp.time(s)
		stampOrNull.timeOrNull(s)
		wantStampOrNull = append(wantStampOrNull, pgtype.Timestamptz{Time: s, Valid: true})
	}
	stampOrNull.timeOrNull(time.Time{})
	wantStampOrNull = append(wantStampOrNull, pgtype.Timestamptz{})

	cases := []struct {
		name string
		cast string
		got  *column
		want any // as pgx encodes it
	}{
		{"text", "text[]", text, texts},
		{"text or NULL", "text[]", textOrNull, wantTextOrNull},
		{"int8", "bigint[]", int8s, ints},
		{"bool", "boolean[]", bools, []bool{true, false}},
		{"bytea", "bytea[]", bytea, bytes},
		{"json", "json[]", json, []map[string][]string{{"a": {"b"}}, {}}},
		{"timestamptz", "timestamptz[]", stamp, stamps},
		{"timestamptz or NULL", "timestamptz[]", stampOrNull, wantStampOrNull},
		{"empty", "text[]", empty, []string{}},
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE received (array_text text)"); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		// Postgres renders both as text, in the same session.
		if _, err := execColumns(ctx, tx, "INSERT INTO received SELECT $1::"+c.cast+"::text", c.got); err != nil {
			t.Fatalf("%s: Postgres refused the column: %v", c.name, err)
		}
		var got, want string
		if err := tx.QueryRow(ctx, "DELETE FROM received RETURNING array_text").Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := tx.QueryRow(ctx, "SELECT $1::"+c.cast+"::text", c.want).Scan(&want); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != want {
			t.Errorf("%s: Postgres received %s, pgx sends %s", c.name, got, want)
		}
	}
}
