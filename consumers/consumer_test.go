package consumers

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// testStream is a private event stream and migrated database for one test.
type testStream struct {
	js   jetstream.JetStream
	cfg  eventlog.StreamConfig
	pool *pgxpool.Pool
	opts Options
}

func newTestStream(t *testing.T) *testStream {
	t.Helper()
	env := testenv.New(t)
	_, js := testenv.ConnectURL(t, env.NATSURL)
	env.DeleteStreamOnCleanup(t, js)
	cfg := eventlog.StreamConfig{Name: env.Stream, SubjectPrefix: env.SubjectPrefix, DuplicateWindow: time.Minute}
	if _, err := eventlog.EnsureStream(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return &testStream{js: js, cfg: cfg, pool: testenv.MigratedPool(t, env.DatabaseURL), opts: Options{
		ReadOptions: ReadOptions{Stream: cfg.Name, Subjects: []string{cfg.AllSubjects()},
			MaxCount: 2, MaxBytes: 1 << 20, Wait: 100 * time.Millisecond, Linger: time.Millisecond},
		StandbyPoll: 100 * time.Millisecond,
	}}
}

// publish stores body from source tallyfy as ingest would, with its
// derived dedup key, or raw when it is not a valid event. It returns the
// stream sequence.
func (s *testStream) publish(t *testing.T, body string) uint64 {
	t.Helper()
	subject := s.cfg.Subject("tallyfy", "")
	var ack *jetstream.PubAck
	var err error
	if rec, invalid := eventlog.NewRecord("tallyfy", []byte(body), time.Now()); invalid != nil {
		ack, err = s.js.Publish(context.Background(), subject, []byte(body))
	} else {
		ack, err = s.js.PublishMsg(context.Background(), rec.Message(subject))
	}
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// consumers returns the consumers of every projection, unpartitioned.
func (s *testStream) consumers(t *testing.T) []*Consumer {
	var cs []*Consumer
	for _, g := range projections.Groups(1) {
		cs = append(cs, New(g, s.pool, s.js, s.opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)))
	}
	return cs
}

// runUntilApplied runs a consumer of every projection until each
// checkpoint reaches seq, then stops them.
func (s *testStream) runUntilApplied(t *testing.T, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer running.Wait()
	defer cancel()
	for _, c := range s.consumers(t) {
		running.Go(func() { c.Run(ctx) })
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		done := true
		for _, p := range projections.Every {
			if cp := s.checkpoint(t, p.Name); cp < seq {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumers did not apply through seq %d", seq)
		}
	}
}

func (s *testStream) checkpoint(t *testing.T, projection string) uint64 {
	t.Helper()
	cp, err := projections.Checkpoint(context.Background(), s.pool, projection)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// redeliver fetches every message of the stream again, as a consumer whose
// acknowledgements were lost would get them.
func (s *testStream) redeliver(t *testing.T) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	stream, err := s.js.Stream(ctx, s.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for uint64(len(msgs)) < info.State.Msgs {
		batch, err := cons.Fetch(int(info.State.Msgs)-len(msgs), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := len(msgs)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil || len(msgs) == n {
			t.Fatalf("redelivery stopped after %d of %d messages: %v", len(msgs), info.State.Msgs, err)
		}
	}
	return msgs
}

// snapshot is every projection's tables and the dead letters, row for
// row, by table name.
func (s *testStream) snapshot(t *testing.T) map[string][][]any {
	t.Helper()
	queries := map[string]string{"dead_letters": "SELECT * FROM dead_letters ORDER BY id"}
	for _, p := range projections.All {
		queries[p.Name+".completions"] = "SELECT * FROM " + p.Name + ".completions ORDER BY task_id, completed_at"
		queries[p.Name+".checkpoint"] = "SELECT * FROM " + p.Name + ".checkpoint"
	}
	queries["event_keys.keys"] = "SELECT * FROM event_keys.keys ORDER BY dedup_key"
	queries["event_keys.repeats"] = "SELECT * FROM event_keys.repeats ORDER BY stream_seq"
	queries["event_keys.checkpoint"] = "SELECT * FROM event_keys.checkpoint"
	queries["timeline.events"] = "SELECT * FROM timeline.events ORDER BY stream_seq"
	queries["timeline.task_state"] = "SELECT * FROM timeline.task_state ORDER BY task_id"
	queries["timeline.checkpoint"] = "SELECT * FROM timeline.checkpoint"
	out := map[string][][]any{}
	for table, query := range queries {
		out[table] = testenv.Rows(t, s.pool, query)
	}
	return out
}

// changedTables names the tables whose rows differ between two snapshots.
func changedTables(before, after map[string][][]any) []string {
	var changed []string
	for table, rows := range before {
		if !reflect.DeepEqual(rows, after[table]) {
			changed = append(changed, table)
		}
	}
	slices.Sort(changed)
	return changed
}

// deadLetterAttempts lists each dead letter's attempts, by id.
func (s *testStream) deadLetterAttempts(t *testing.T) []int32 {
	t.Helper()
	var out []int32
	for _, r := range testenv.Rows(t, s.pool, "SELECT attempts FROM dead_letters ORDER BY id") {
		out = append(out, r[0].(int32))
	}
	return out
}

// applyAgain hands msgs to a fresh consumer of every projection, on a
// session of its own, as one batch.
func (s *testStream) applyAgain(t *testing.T, msgs []jetstream.Msg) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, c := range s.consumers(t) {
		if err := c.applyBatch(ctx, conn, entries(t, msgs)); err != nil {
			t.Fatalf("%s: %v", c.group.Name, err)
		}
	}
}

// entries decodes msgs as a Reader does.
func entries(t *testing.T, msgs []jetstream.Msg) []projections.Entry {
	t.Helper()
	var out []projections.Entry
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeEntry(meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data()))
	}
	return out
}

func TestRedeliveryAfterCommitIsNotAppliedTwice(t *testing.T) {
	t.Parallel()
	s := newTestStream(t)
	s.publish(t, "not json")
	var last uint64
	for _, at := range []string{"2024-01-15T10:30:00Z", "2024-01-16T10:30:00Z", "2024-01-14T10:30:00Z"} {
		s.publish(t, `{"event":"task.completed","task_id":"t1","completed_at":"`+at+`"}`)
		last = s.publish(t, `{"event":"task.completed","task_id":"t2","completed_at":"`+at+`"}`)
	}
	s.runUntilApplied(t, last)
	before := s.snapshot(t)
	if got := s.deadLetterAttempts(t); !reflect.DeepEqual(got, []int32{1, 1, 1}) {
		t.Fatalf("dead letter attempts %v, want the poison message once per projection", got)
	}

	// The whole stream comes back, as if no acknowledgement had arrived.
	s.applyAgain(t, s.redeliver(t))
	if got := s.deadLetterAttempts(t); !reflect.DeepEqual(got, []int32{1, 1, 1}) {
		t.Errorf("dead letter attempts %v after the redelivery, want still 1", got)
	}
	if changed := changedTables(before, s.snapshot(t)); len(changed) > 0 {
		t.Errorf("a redelivered batch changed %v", changed)
	}

	// A redelivery that reaches past the checkpoint applies only what is new.
	next := s.publish(t, `{"event":"task.completed","task_id":"t3","completed_at":"2024-01-15T10:30:00Z"}`)
	s.applyAgain(t, s.redeliver(t))
	for _, p := range projections.All {
		if cp := s.checkpoint(t, p.Name); cp != next {
			t.Errorf("%s checkpoint %d, want %d", p.Name, cp, next)
		}
		if rows := testenv.Rows(t, s.pool, "SELECT 1 FROM "+p.Name+".completions WHERE task_id = 't3'"); len(rows) != 1 {
			t.Errorf("%s holds %d completions of the new event, want 1", p.Name, len(rows))
		}
	}
	if got := s.deadLetterAttempts(t); !reflect.DeepEqual(got, []int32{1, 1, 1}) {
		t.Errorf("dead letter attempts %v after a redelivery past the checkpoint, want still 1", got)
	}
}

// A backlog applied in one large batch, each projection in a transaction
// of its own and in parallel (the key stage first), leaves the same tables
// as the same events applied in small batches of one transaction each.
func TestParallelBatchesApplyAsSmallOnesDo(t *testing.T) {
	t.Parallel()
	parallel, together := newTestStream(t), newTestStream(t)
	var bodies []string
	for task := range 400 {
		for day := 1; day <= 3; day++ {
			bodies = append(bodies, fmt.Sprintf(`{"event":"task.completed","task_id":"p%d","completed_at":"2024-01-%02dT10:00:00Z"}`, task, 10-day))
		}
		if task%7 == 0 {
			bodies = append(bodies, fmt.Sprintf(`{"event":"task.reopened","task_id":"p%d","reopened_at":"2024-01-09T11:00:00Z"}`, task))
		}
	}
	bodies = append(bodies, "not json", `{"event":"task.completed","task_id":"p1","completed_at":"2024-01-09T10:00:00Z"}`)
	var last uint64
	for _, body := range bodies {
		// The same message in both streams, so that they differ in nothing.
		msg := func(s *testStream) *nats.Msg { return nats.NewMsg(s.cfg.Subject("tallyfy", "")) }
		if rec, err := eventlog.NewRecord("tallyfy", []byte(body), time.Now()); err == nil {
			msg = func(s *testStream) *nats.Msg { return rec.Message(s.cfg.Subject("tallyfy", "")) }
		}
		for _, s := range []*testStream{parallel, together} {
			m := msg(s)
			if m.Data == nil {
				m.Data = []byte(body)
			}
			ack, err := s.js.PublishMsg(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			last = max(last, ack.Sequence) // a duplicate answers its original's
			if strings.Contains(body, `"p1",`) && strings.Contains(body, "-09T") {
				// Stored again past JetStream's dedup, as after its window:
				// the key stage finds a repeat, which the policies drop.
				m.Header.Del(nats.MsgIdHdr)
				if ack, err = s.js.PublishMsg(context.Background(), m); err != nil {
					t.Fatal(err)
				}
				last = max(last, ack.Sequence)
			}
		}
	}
	if len(bodies) < parallelFrom {
		t.Fatalf("%d events do not make a parallel batch", len(bodies))
	}

	together.runUntilApplied(t, last)

	ctx := context.Background()
	conn, err := connectProjectionSession(ctx, parallel.pool, "test-parallel")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	c := parallel.consumers(t)[0]
	defer c.helpers.close(ctx)
	if err := c.readCheckpoints(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := c.applyBatch(ctx, conn, entries(t, parallel.redeliver(t))); err != nil {
		t.Fatal(err)
	}
	if slices.IndexFunc(c.helpers.conns, func(h *pgx.Conn) bool { return h != nil }) < 0 {
		t.Fatal("the batch was not applied in parallel")
	}

	queries := []string{
		"SELECT projection, stream_seq, reason FROM dead_letters ORDER BY projection, stream_seq",
		"SELECT dedup_key, stream_seq, body_digest FROM event_keys.keys ORDER BY dedup_key",
		"SELECT * FROM event_keys.repeats ORDER BY stream_seq",
		"SELECT stream_seq, task_id, event, dedup_key FROM timeline.events ORDER BY stream_seq",
		"SELECT * FROM timeline.task_state ORDER BY task_id",
	}
	for _, p := range projections.Every {
		queries = append(queries, "SELECT partition, last_seq FROM "+p.Name+".checkpoint ORDER BY partition")
	}
	for _, p := range projections.All {
		queries = append(queries, "SELECT * FROM "+p.Name+".completions ORDER BY task_id, completed_at")
	}
	for _, q := range queries {
		got, want := testenv.Rows(t, parallel.pool, q), testenv.Rows(t, together.pool, q)
		if len(want) == 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %d rows in parallel, %d in small batches, or they differ", q, len(got), len(want))
		}
	}
}
