package projections_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// entry is a stream message carrying body under key, decoded as a consumer
// would decode it.
func entry(t *testing.T, seq uint64, key, body string) projections.Entry {
	t.Helper()
	ev, err := domain.ParseEvent("s", []byte(body))
	e := projections.Entry{
		Message:    projections.Message{Seq: seq, Subject: "x.s", Header: map[string][]string{"Nats-Msg-Id": {key}}, Body: []byte(body)},
		Record:     domain.Recorded{Seq: seq, DedupKey: key, Event: ev},
		DecodeErr:  err,
		ReceivedAt: base.Add(time.Duration(seq) * time.Second),
	}
	return e
}

func applyTimeline(t *testing.T, pool *pgxpool.Pool, entries ...projections.Entry) projections.Applied {
	t.Helper()
	var applied projections.Applied
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) (err error) {
		applied, err = projections.Timeline.ApplyEntries(context.Background(), tx, projections.Timeline.Name, entries)
		return err
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return applied
}

func timelineSeqs(t *testing.T, pool *pgxpool.Pool, task string) []uint64 {
	t.Helper()
	events, more, err := projections.TaskEvents(context.Background(), pool, task, 0, 100)
	if err != nil || more {
		t.Fatalf("read timeline of %s: more %v, %v", task, more, err)
	}
	var seqs []uint64
	for _, e := range events {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func TestTimelineKeepsEachEventOnceInStreamOrder(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	const done = `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z","event_id":"e1","external_id":"x1"}`
	const doneSpaced = `{ "event": "task.completed", "task_id": "t1", "completed_at": "2024-01-15T10:30:00Z", "event_id": "e1", "external_id": "x1" }`
	const other = `{"event":"task.assigned","task_id":"t1","assignee":"ann"}`
	const reopen = `{"event":"task.reopened","task_id":"t1","reopened_at":"2024-01-16T10:30:00Z"}`
	const reused = `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-17T10:30:00Z","event_id":"e1"}`

	applied := applyTimeline(t, pool,
		entry(t, 1, "s:e1", done),
		entry(t, 2, "s:other", other),
		entry(t, 3, "s:e1", doneSpaced), // a re-send: same key, same body but for whitespace
		entry(t, 4, "s:none", "not json"),
		entry(t, 5, "s:reopen", reopen),
	)
	if applied.Duplicates != 1 || applied.DeadLetters != 0 {
		t.Errorf("applied %+v, want the re-send counted as a duplicate and no dead letter", applied)
	}
	// Applied again, in another batch: a redelivery changes nothing.
	applyTimeline(t, pool, entry(t, 3, "s:e1", doneSpaced), entry(t, 1, "s:e1", done))
	// The key reused with another body is another event.
	if applied := applyTimeline(t, pool, entry(t, 6, "s:e1", reused)); applied.Duplicates != 0 || applied.DeadLetters != 0 {
		t.Errorf("applied %+v, want the reused key applied as a new event", applied)
	}
	if got, want := timelineSeqs(t, pool, "t1"), []uint64{1, 2, 5, 6}; !reflect.DeepEqual(got, want) {
		t.Errorf("timeline seqs %v, want %v", got, want)
	}

	events, _, err := projections.TaskEvents(context.Background(), pool, "t1", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := projections.TimelineEvent{Seq: 1, TaskID: "t1", Type: "task.completed", Source: "s", DedupKey: "s:e1",
		EventID: "e1", ExternalID: "x1", ReceivedAt: base.Add(time.Second),
		Header: map[string][]string{"Nats-Msg-Id": {"s:e1"}}, Body: []byte(done)}
	if len(events) != 1 || !reflect.DeepEqual(events[0], want) {
		t.Errorf("first event %+v, want %+v", events, want)
	}

	page, more, err := projections.TaskEvents(context.Background(), pool, "t1", 2, 1)
	if err != nil || !more || len(page) != 1 || page[0].Seq != 5 {
		t.Errorf("page after seq 2: %+v more %v err %v, want seq 5 and more", page, more, err)
	}

	for _, tt := range []struct {
		field projections.EventField
		value string
		seqs  []uint64
	}{
		{projections.ByDedupKey, "s:e1", []uint64{1, 6}},
		{projections.ByEventID, "e1", []uint64{1, 6}},
		{projections.ByExternalID, "x1", []uint64{1}},
		{projections.ByExternalID, "nope", nil},
	} {
		found, err := projections.FindEvents(context.Background(), pool, tt.field, tt.value, 10)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, e := range found {
			seqs = append(seqs, e.Seq)
		}
		if !reflect.DeepEqual(seqs, tt.seqs) {
			t.Errorf("find by %s %q: %v, want %v", tt.field, tt.value, seqs, tt.seqs)
		}
	}
	if _, err := projections.FindEvents(context.Background(), pool, "task_id", "t1", 10); err == nil {
		t.Error("find by an unsupported field succeeded")
	}
}

func TestTimelineSetsAsideWhatTheDatabaseRejects(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	// A header value with a NUL character, which jsonb could not hold, is
	// kept; a rule of the database's is what sets an event aside.
	odd := entry(t, 1, "s:odd", `{"event":"task.assigned","task_id":"t2"}`)
	odd.Message.Header["X-Tool"] = []string{"a\x00b"}
	if _, err := pool.Exec(context.Background(), `ALTER TABLE timeline.events ADD CHECK (event <> 'task.blocked')`); err != nil {
		t.Fatal(err)
	}
	bad := entry(t, 2, "s:bad", `{"event":"task.blocked","task_id":"t2"}`)
	good := entry(t, 3, "s:good", `{"event":"task.assigned","task_id":"t2"}`)
	if applied := applyTimeline(t, pool, odd, bad, good); applied.DeadLetters != 1 {
		t.Fatalf("%d dead letters, want the bad event's", applied.DeadLetters)
	}
	if got := timelineSeqs(t, pool, "t2"); !reflect.DeepEqual(got, []uint64{1, 3}) {
		t.Errorf("timeline %v, want the events around the bad one", got)
	}
	letters, err := projections.DeadLetters(context.Background(), pool, false, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].Projection != projections.Timeline.Name || letters[0].Message.Seq != 2 {
		t.Errorf("dead letters %+v, want seq 2 of the timeline", letters)
	}
}
