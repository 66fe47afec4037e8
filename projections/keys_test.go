package projections_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// keyedEntry is a completion of task t1 stored at at under key with body.
func keyedEntry(seq uint64, key, body string, at time.Time, explicit bool) projections.Entry {
	r := completed(seq, "t1", int(seq))
	r.DedupKey = key
	return projections.Entry{Record: r, ExplicitKey: explicit,
		Message: projections.Message{Seq: seq, Subject: "x.s", Body: []byte(body), Stored: at}}
}

// keyHistory uses two keys over nine days, with a retention of seven.
func keyHistory() []projections.Entry {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	return []projections.Entry{
		keyedEntry(1, "s:k1", "A", t0, true),
		keyedEntry(2, "s:k1", "A", t0.Add(time.Hour), true),     // a re-send: duplicate of 1
		keyedEntry(3, "s:k1", "B", t0.Add(3*day), true),         // another body: reused key
		keyedEntry(4, "s:derived:x", "C", t0.Add(day), false),   // original
		keyedEntry(5, "s:derived:x", "D", t0.Add(2*day), false), // derived keys never count as reused
		keyedEntry(6, "s:k1", "B", t0.Add(8*day), true),         // past the retention of 1: a new original
		keyedEntry(7, "s:k1", "A", t0.Add(9*day), true),         // reused against 6
	}
}

func applyIn(t *testing.T, pool *pgxpool.Pool, p projections.Projection, schema string, entries []projections.Entry) projections.Applied {
	t.Helper()
	var out projections.Applied
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) (err error) {
		out, err = p.ApplyEntries(context.Background(), tx, schema, entries)
		return err
	})
	if err != nil {
		t.Fatalf("apply to %s: %v", schema, err)
	}
	return out
}

func keyTables(t *testing.T, pool *pgxpool.Pool, schema string) [][][]any {
	return [][][]any{
		testenv.Rows(t, pool, "SELECT dedup_key, stream_seq, body_digest, stored_at FROM "+schema+".keys ORDER BY dedup_key"),
		testenv.Rows(t, pool, "SELECT stream_seq, original_seq, dedup_key, reused FROM "+schema+".repeats ORDER BY stream_seq"),
	}
}

// TestKeyStageDecidesByStoredTimeWhateverTheBatching: the key stage's
// decisions depend on the events' stream timestamps only, so applying the
// history in one batch or one event at a time (as live and a rebuild may)
// gives the same tables; and the policies skip the duplicates and set the
// reused keys aside.
func TestKeyStageDecidesByStoredTimeWhateverTheBatching(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	keys := projections.EventKeys
	keys.KeyRetention = 7 * 24 * time.Hour
	history := keyHistory()

	applyIn(t, pool, keys, keys.Name, history)
	if err := keys.PrepareShadow(context.Background(), pool, 0, 1); err != nil {
		t.Fatal(err)
	}
	for _, e := range history {
		applyIn(t, pool, keys, keys.ShadowSchema(), []projections.Entry{e})
	}
	live, rebuilt := keyTables(t, pool, keys.Name), keyTables(t, pool, keys.ShadowSchema())
	if len(live[0]) != len(rebuilt[0]) || len(live[1]) != len(rebuilt[1]) {
		t.Fatalf("one batch %v, one at a time %v", live, rebuilt)
	}
	for i := range live {
		for j := range live[i] {
			for k := range live[i][j] {
				if live[i][j][k] != rebuilt[i][j][k] {
					if a, ok := live[i][j][k].(time.Time); !ok || !a.Equal(rebuilt[i][j][k].(time.Time)) {
						t.Errorf("one batch %v, one at a time %v", live[i][j], rebuilt[i][j])
					}
				}
			}
		}
	}
	// The derived key's original is past the retention of the newest event.
	if originals := live[0]; len(originals) != 1 || originals[0][0] != "s:k1" || originals[0][1] != int64(6) {
		t.Errorf("originals %v, want s:k1 at 6 only", originals)
	}
	want := [][]any{{int64(2), int64(1), "s:k1", false}, {int64(3), int64(1), "s:k1", true},
		{int64(5), int64(4), "s:derived:x", false}, {int64(7), int64(6), "s:k1", true}}
	if got := live[1]; len(got) != len(want) {
		t.Fatalf("repeats %v, want %v", got, want)
	}
	for i, row := range live[1] {
		for k := range row {
			if row[k] != want[i][k] {
				t.Errorf("repeat %v, want %v", row, want[i])
			}
		}
	}

	first := projections.ForPolicy(domain.PolicyFirst)
	out := applyIn(t, pool, first, first.Name, history)
	if out.Duplicates != 2 || out.DeadLetters != 2 {
		t.Errorf("applied %+v, want 2 duplicates and 2 dead letters", out)
	}
	letters, err := projections.DeadLetters(context.Background(), pool, false, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, seq := range []uint64{3, 7} {
		if i >= len(letters) || letters[i].Message.Seq != seq || !strings.HasPrefix(letters[i].Reason, projections.ReasonKeyReused) {
			t.Errorf("dead letters %+v, want seqs 3 and 7 with reason %s", letters, projections.ReasonKeyReused)
			break
		}
	}
}

// TestOriginalsAnswerOnlyWithinTheRetention is the lookup the ingest makes.
func TestOriginalsAnswerOnlyWithinTheRetention(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	keys := projections.EventKeys
	keys.KeyRetention = 7 * 24 * time.Hour
	history := keyHistory()
	applyIn(t, pool, keys, keys.Name, history)
	got, err := projections.Originals(context.Background(), pool, keys.Name, []string{"s:k1", "s:derived:x", "s:none"},
		history[5].Message.Stored)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := got["s:k1"]; len(got) != 1 || !ok || o.Seq != 6 || o.Digest != domain.BodyDigest([]byte("B")) {
		t.Errorf("originals %+v, want s:k1 at 6 only", got)
	}
}
