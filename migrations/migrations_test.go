package migrations_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/migrations"
)

// TestTaskStateMovesToTheTimeline migrates a database holding a task state
// in each policy to one state in the timeline, and back: no state is lost,
// and the side taking the state over reads again whatever the other side
// had not applied.
func TestTaskStateMovesToTheTimeline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	migrate := func(version uint) {
		t.Helper()
		if err := migrations.To(pool, version); err != nil {
			t.Fatalf("migrate to %d: %v", version, err)
		}
	}
	rows := func(schema string) [][]any {
		t.Helper()
		return testenv.Rows(t, pool, "SELECT task_id, last_completed_seq, last_reopened_seq FROM "+schema+".task_state ORDER BY task_id")
	}
	checkpoint := func(schema string) [][]any {
		t.Helper()
		return testenv.Rows(t, pool, "SELECT last_seq FROM "+schema+".checkpoint")
	}

	migrate(7)
	for _, s := range []string{"completions_all", "completions_first", "completions_latest"} {
		exec(`INSERT INTO ` + s + `.task_state VALUES ('a', '2024-01-01', 3, NULL, NULL), ('b', '2024-01-01', 4, '2024-01-02', 5)`)
		exec(`UPDATE ` + s + `.checkpoint SET last_seq = 5`)
	}
	exec(`UPDATE timeline.checkpoint SET last_seq = 9`)
	want := rows("completions_all")

	migrate(8)
	if got := rows("timeline"); !reflect.DeepEqual(got, want) {
		t.Errorf("timeline states %v, want %v", got, want)
	}
	if got := checkpoint("timeline"); got[0][0] != int64(5) {
		t.Errorf("timeline checkpoint %v, want 5, where the states were", got)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'task_state' AND schemaname <> 'timeline'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d task state tables left beside the timeline's (%v)", left, err)
	}
	// Shadows made from now on: the timeline's has the state, a policy's not.
	exec(`SELECT taskledger_create_timeline('timeline_rebuild'), taskledger_create_projection('completions_all_rebuild', 'all')`)
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'task_state' AND schemaname LIKE '%_rebuild'`).Scan(&left); err != nil || left != 1 {
		t.Errorf("%d task state tables in the new shadows, want the timeline's (%v)", left, err)
	}
	exec(`DROP SCHEMA timeline_rebuild CASCADE; DROP SCHEMA completions_all_rebuild CASCADE`)

	exec(`UPDATE timeline.checkpoint SET last_seq = 4`)
	migrate(7)
	for _, s := range []string{"completions_all", "completions_first", "completions_latest"} {
		if got := rows(s); !reflect.DeepEqual(got, want) {
			t.Errorf("%s states after going back %v, want %v", s, got, want)
		}
		if got := checkpoint(s); got[0][0] != int64(4) {
			t.Errorf("%s checkpoint %v after going back, want the timeline's 4", s, got)
		}
	}
	migrate(8)
}
