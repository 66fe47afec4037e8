package projections_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

var base = time.Date(2024, 1, 15, 10, 0, 0, 0, time.UTC)

func completed(seq uint64, task string, hour int) domain.Recorded {
	return domain.Recorded{Seq: seq, DedupKey: fmt.Sprintf("s:c-%s-%d-%d", task, hour, seq), Event: domain.Event{
		Source: "s", Type: domain.TypeCompleted, TaskID: task, ProcessID: "p-" + task[:1],
		CompletedBy: fmt.Sprintf("u%d", seq), OccurredAt: base.Add(time.Duration(hour) * time.Hour)}}
}

func reopened(seq uint64, task string, hour int) domain.Recorded {
	r := completed(seq, task, hour)
	r.Type, r.DedupKey = domain.TypeReopened, fmt.Sprintf("s:r-%s-%d-%d", task, hour, seq)
	return r
}

// applyBatch applies records in one transaction as the consumer does.
func applyBatch(t *testing.T, pool *pgxpool.Pool, p projections.Projection, records []domain.Recorded) projections.Applied {
	t.Helper()
	entries := make([]projections.Entry, len(records))
	for i, r := range records {
		entries[i] = projections.Entry{Message: projections.Message{Seq: r.Seq, Subject: "x.s", Body: []byte("{}")}, Record: r}
	}
	var out projections.Applied
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) (err error) {
		out, err = p.ApplyEntries(context.Background(), tx, p.Name, entries)
		return err
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return out
}

func stored(t *testing.T, pool *pgxpool.Pool, p projections.Projection) ([]domain.Completion, []domain.TaskState) {
	t.Helper()
	var cs []domain.Completion
	var states []domain.TaskState
	for _, task := range []string{"a1", "a2", "b1", "b2"} {
		h, err := p.History(context.Background(), pool, task)
		if errors.Is(err, projections.ErrNoCompletions) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, h.Completions...)
		states = append(states, h.State)
	}
	return cs, states
}

// TestProjectionsIgnoreOrderAndDuplicates is the property test against
// Postgres: any permutation of a history, with any events repeated and cut
// into any batches, leaves each projection as domain.Keep says.
func TestProjectionsIgnoreOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	rng := rand.New(rand.NewPCG(7, 9))
	tasks := []string{"a1", "a2", "b1", "b2"}
	for trial := range 15 {
		var history []domain.Recorded
		for seq := uint64(1); seq <= 30; seq++ {
			task, hour := tasks[rng.IntN(len(tasks))], rng.IntN(5)
			if rng.IntN(4) == 0 {
				history = append(history, reopened(seq, task, hour))
			} else {
				history = append(history, completed(seq, task, hour))
			}
		}
		delivered := append([]domain.Recorded(nil), history...)
		for range rng.IntN(15) {
			delivered = append(delivered, history[rng.IntN(len(history))])
		}
		rng.Shuffle(len(delivered), func(i, j int) { delivered[i], delivered[j] = delivered[j], delivered[i] })

		if _, err := pool.Exec(context.Background(), `TRUNCATE completions_all.completions,
			completions_first.completions, completions_latest.completions,
			timeline.events, timeline.task_state`); err != nil {
			t.Fatal(err)
		}
		// The timeline keeps the task states every policy's histories show.
		for _, p := range append(slices.Clone(projections.All), projections.Timeline) {
			for rest := delivered; len(rest) > 0; {
				n := 1 + rng.IntN(len(rest))
				applyBatch(t, pool, p, rest[:n])
				rest = rest[n:]
			}
		}
		for _, p := range projections.All {
			var want []domain.Completion
			for _, r := range history {
				if c, ok := domain.CompletionOf(r); ok {
					want = append(want, c)
				}
			}
			want = domain.Keep(p.Policy, want)
			var wantStates []domain.TaskState
			for _, s := range domain.FoldStates(history) {
				if !s.LastCompleted.IsZero() {
					wantStates = append(wantStates, s)
				}
			}
			got, gotStates := stored(t, pool, p)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d %s:\n got %v\nwant %v", trial, p.Name, got, want)
			}
			if !reflect.DeepEqual(gotStates, wantStates) {
				t.Fatalf("trial %d %s states:\n got %v\nwant %v", trial, p.Name, gotStates, wantStates)
			}
		}
	}
}

func TestRepeatedKeyChangesNothing(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	p := projections.ForPolicy(domain.PolicyAll)
	applyBatch(t, pool, projections.EventKeys, []domain.Recorded{completed(1, "a1", 1)})
	applyBatch(t, pool, projections.Timeline, []domain.Recorded{completed(1, "a1", 1)})
	if got := applyBatch(t, pool, p, []domain.Recorded{completed(1, "a1", 1)}); got.Duplicates != 0 {
		t.Errorf("first application counted %d duplicates", got.Duplicates)
	}
	// The same (derived) key stored again long after JetStream's window
	// forgot it, with a later time: the key stage finds it a repeat, the
	// policy drops it and counts it, and the timeline's task state leaves
	// it out.
	late := completed(50, "a1", 3)
	late.DedupKey = completed(1, "a1", 1).DedupKey
	applyBatch(t, pool, projections.EventKeys, []domain.Recorded{late, completed(51, "b1", 1)})
	applyBatch(t, pool, projections.Timeline, []domain.Recorded{late, completed(51, "b1", 1)})
	if got := applyBatch(t, pool, p, []domain.Recorded{late, completed(51, "b1", 1)}); got.Duplicates != 1 {
		t.Errorf("duplicates %d, want 1", got.Duplicates)
	}
	h, err := p.History(context.Background(), pool, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Completions) != 1 || h.Completions[0].Seq != 1 {
		t.Errorf("completions %v, want only seq 1", h.Completions)
	}
	if h.State.LastCompleted.Seq != 1 {
		t.Errorf("state %+v, want the last completion at seq 1", h.State)
	}
}

func TestBadDataBecomesADeadLetterAndTheRestApplies(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	ctx := context.Background()
	p := projections.ForPolicy(domain.PolicyLatest)
	// A rule the database enforces and this event breaks: the batch fails
	// as a whole, then each event is tried alone.
	if _, err := pool.Exec(ctx, `ALTER TABLE completions_latest.completions ADD CHECK (completed_by <> 'u2')`); err != nil {
		t.Fatal(err)
	}
	records := []domain.Recorded{completed(1, "a1", 1), completed(2, "a2", 1), completed(3, "b1", 1)}
	entries := []projections.Entry{}
	for _, r := range records {
		entries = append(entries, projections.Entry{Message: projections.Message{Seq: r.Seq, Subject: "x.s", Body: []byte(`{"n":1}`)}, Record: r})
	}
	entries = append(entries, projections.Entry{
		Message:   projections.Message{Seq: 4, Subject: "x.s", Header: map[string][]string{"A": {"b"}}, Body: []byte("not json")},
		DecodeErr: errors.New("undecodable event: body is not valid JSON"),
	})
	var out projections.Applied
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		out, err = p.ApplyEntries(ctx, tx, p.Name, entries)
		return err
	})
	if err != nil || out.DeadLetters != 2 {
		t.Fatalf("dead letters %d, err %v; want 2, nil", out.DeadLetters, err)
	}
	for _, task := range []string{"a1", "b1"} {
		if _, err := p.History(ctx, pool, task); err != nil {
			t.Errorf("%s was not applied: %v", task, err)
		}
	}
	if _, err := p.History(ctx, pool, "a2"); !errors.Is(err, projections.ErrNoCompletions) {
		t.Errorf("a2: %v, want ErrNoCompletions", err)
	}
	letters, err := projections.DeadLetters(ctx, pool, false, 10)
	if err != nil || len(letters) != 2 {
		t.Fatalf("dead letters %v, %v", letters, err)
	}
	if letters[0].Message.Seq != 2 || letters[0].Projection != p.Name || letters[1].Message.Seq != 4 ||
		!strings.Contains(letters[0].Reason, "check constraint") ||
		string(letters[1].Message.Body) != "not json" || letters[1].Message.Header["A"][0] != "b" ||
		letters[1].Reason == "" {
		t.Errorf("unexpected dead letters %+v", letters)
	}
}

func TestProcessHistoriesPaginate(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	p := projections.ForPolicy(domain.PolicyAll)
	var records []domain.Recorded
	for i, task := range []string{"a1", "a2", "a3", "a4", "a5"} {
		records = append(records, completed(uint64(2*i+1), task, 1), completed(uint64(2*i+2), task, 2))
	}
	records = append(records, completed(20, "b1", 1)) // another process
	applyBatch(t, pool, p, records)
	var seen []string
	after := ""
	for page := 0; ; page++ {
		hs, more, err := p.ProcessHistories(context.Background(), pool, "p-a", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if len(h.Completions) != 2 {
				t.Errorf("%s has %d completions, want 2", h.TaskID, len(h.Completions))
			}
			seen = append(seen, h.TaskID)
			after = h.TaskID
		}
		if !more {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if !reflect.DeepEqual(seen, []string{"a1", "a2", "a3", "a4", "a5"}) {
		t.Errorf("pages gave %v", seen)
	}
}
