package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskledger/taskledger/domain"
)

// Message is a stream message as received, kept for dead letters.
type Message struct {
	Seq     uint64
	Subject string
	Header  map[string][]string
	Body    []byte
	Stored  time.Time // the stream's timestamp; zero when not known
}

// Entry is one message handed to a projection: the event decoded from it,
// or DecodeErr saying why there is none, and when ingest received it (zero
// when the message does not say).
type Entry struct {
	Message    Message
	Record     domain.Recorded
	DecodeErr  error
	ReceivedAt time.Time
	// ExplicitKey is set when the sender chose the dedup key, so that the
	// same key with another body is a reused key, not a duplicate.
	ExplicitKey bool
}

// IsPermanent reports whether err is the data's fault rather than the
// database's: a data exception or a constraint violation. Applying the same
// data again would fail again, so such events become dead letters;
// everything else (connections, serialization failures, shutdowns) is
// retried.
func IsPermanent(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgerrcode.IsDataException(pgErr.Code) || pgerrcode.IsIntegrityConstraintViolation(pgErr.Code))
}

// Applied tells what ApplyEntries did besides applying.
type Applied struct {
	DeadLetters int // entries set aside as dead letters
	Duplicates  int // entries dropped as repeats of an earlier event
	// ResendDelays are, of the key stage only, how long after its original
	// each exact duplicate it found was stored.
	ResendDelays []time.Duration
}

// ApplyEntries applies entries to the projection stored in schema, inside
// tx. Entries that cannot be applied (undecodable, reusing a sender-chosen
// key for another body, or rejected by the database as bad data) are
// recorded as dead letters in the same transaction, except that the
// timeline skips undecodable entries (they belong to no task) and keeps
// reused keys (another body is another event). The policies drop exact
// repeats of an earlier event as the key stage found them, and the
// timeline leaves every repeat out of the task states, so both must only
// be given entries the key stage has applied (see WaitsForKeys). A
// returned error is never the data's fault: the caller should roll back
// and retry.
func (p Projection) ApplyEntries(ctx context.Context, tx pgx.Tx, schema string, entries []Entry) (Applied, error) {
	return p.applyEntries(ctx, tx, schema, entries, false)
}

// ReplayEntries is ApplyEntries for a rebuild's shadow that
// DropShadowIndexes readied: a policy's completions and the timeline's
// events are appended without looking for the rows they would replace,
// the same entries in stream order, and FinishShadow keeps of them what
// ApplyEntries would have kept. The key stage is applied as by
// ApplyEntries, and so are the timeline's task states. Duplicates are not
// counted.
func (p Projection) ReplayEntries(ctx context.Context, tx pgx.Tx, schema string, entries []Entry) (Applied, error) {
	return p.applyEntries(ctx, tx, schema, entries, true)
}

// applyEntries is ApplyEntries, or ReplayEntries when appending.
func (p Projection) applyEntries(ctx context.Context, tx pgx.Tx, schema string, entries []Entry, appending bool) (Applied, error) {
	if p.Keys {
		return p.applyKeys(ctx, tx, schema, entries)
	}
	repeats, err := repeatsAmong(ctx, tx, entries)
	if err != nil {
		return Applied{}, err
	}
	var out Applied
	var dead []deadLetter
	// applicable are the entries applied: nil while none is left out (the
	// usual case: no copy), then a copy of those kept.
	var applicable []Entry
	for i, e := range entries {
		r, repeated := repeats[e.Message.Seq]
		leftOut := true
		switch {
		case p.IsTimeline():
			leftOut = false
		case e.DecodeErr != nil:
			dead = append(dead, deadLetter{e.Message, e.DecodeErr.Error()})
		case repeated && r.reused:
			dead = append(dead, deadLetter{e.Message, r.reason()})
		case repeated:
			out.Duplicates++
		default:
			leftOut = false
		}
		switch {
		case leftOut && applicable == nil:
			applicable = append(make([]Entry, 0, len(entries)), entries[:i]...)
		case !leftOut && applicable != nil:
			applicable = append(applicable, e)
		}
	}
	if applicable == nil {
		applicable = entries
	}
	repeatedBefore := out.Duplicates
	err = inSavepoint(ctx, tx, func(sp pgx.Tx) (err error) {
		dup, err := p.apply(ctx, sp, schema, applicable, repeats, appending)
		out.Duplicates = repeatedBefore + dup
		return err
	})
	if IsPermanent(err) {
		// Find the culprits: apply one entry at a time.
		out.Duplicates, err = repeatedBefore, nil
		for _, e := range applicable {
			err := inSavepoint(ctx, tx, func(sp pgx.Tx) error {
				dup, err := p.apply(ctx, sp, schema, []Entry{e}, repeats, appending)
				out.Duplicates += dup
				return err
			})
			if IsPermanent(err) {
				dead = append(dead, deadLetter{e.Message, err.Error()})
			} else if err != nil {
				return Applied{}, err
			}
		}
	}
	if err != nil {
		return Applied{}, err
	}
	slices.SortFunc(dead, func(a, b deadLetter) int { return cmp.Compare(a.msg.Seq, b.msg.Seq) })
	for _, d := range dead {
		if err := p.recordDeadLetter(ctx, tx, d); err != nil {
			return Applied{}, err
		}
	}
	out.DeadLetters = len(dead)
	return out, nil
}

// apply applies entries by the projection's kind: the timeline takes them
// as they are and folds those that do not repeat an earlier event into the
// task states, the policies take their decoded events. It returns how many
// were duplicates the projection had already applied. Appending, it adds
// rows without looking for those they would replace (see ReplayEntries).
func (p Projection) apply(ctx context.Context, tx pgx.Tx, schema string, entries []Entry, repeats map[uint64]repeat, appending bool) (duplicates int, err error) {
	if p.IsTimeline() {
		return applyTimeline(ctx, tx, schema, entries, repeats, appending)
	}
	completions := make([]domain.Completion, 0, len(entries))
	for _, e := range entries {
		if c, ok := domain.CompletionOf(e.Record); ok {
			completions = append(completions, c)
		}
	}
	return 0, p.writeCompletions(ctx, tx, schema, domain.Keep(p.Policy, completions), appending)
}

// insertExpectingNew runs insert, an INSERT statement, in a savepoint; should
// a row it adds meet another by a unique index (one in the table, or one
// of its own rows), it runs insert+onConflict instead. Where that is rare
// this spares Postgres most of what ON CONFLICT costs: it inserts every row
// speculatively, which takes half as long again as a plain INSERT (measured
// on the timeline, the completions and the keys; the key stage does the
// same its own way, see applyKeys).
func insertExpectingNew(ctx context.Context, tx pgx.Tx, insert, onConflict string, columns ...*column) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := inSavepoint(ctx, tx, func(sp pgx.Tx) (err error) {
		tag, err = execColumns(ctx, sp, insert, columns...)
		return err
	})
	if !isUniqueViolation(err) {
		return tag, err
	}
	return execColumns(ctx, tx, insert+onConflict, columns...)
}

// isUniqueViolation reports whether err is a row's being in a table
// already, by one of its unique indexes.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation
}

func inSavepoint(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(sp); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	return sp.Commit(ctx)
}

// keepRule is how p's read model keeps one row per key: the columns of
// its unique key, the order in which the rows sharing a key rank (the one
// kept first, see domain.Keep), and when an incoming row (excluded)
// replaces the stored one (c), "" when it never does. ApplyEntries upserts
// by it, and FinishShadow keeps by it what ReplayEntries appended. The key
// is "" for the key stage, which keeps by other rules.
func (p Projection) keepRule() (key, order, replaces string) {
	switch {
	case p.IsTimeline():
		return "dedup_key, body_digest", "stream_seq", ""
	case p.Policy == domain.PolicyAll:
		return "task_id, completed_at", "stream_seq", "excluded.stream_seq < c.stream_seq"
	case p.Policy == domain.PolicyFirst:
		return "task_id", "completed_at, stream_seq",
			"(excluded.completed_at, excluded.stream_seq) < (c.completed_at, c.stream_seq)"
	case p.Policy == domain.PolicyLatest:
		return "task_id", "completed_at DESC, stream_seq DESC",
			"(excluded.completed_at, excluded.stream_seq) > (c.completed_at, c.stream_seq)"
	}
	return "", "", ""
}

// readModel is the table ReplayEntries appends to.
func (p Projection) readModel() string {
	if p.IsTimeline() {
		return "events"
	}
	return "completions"
}

// writeCompletions writes what the policy keeps, one statement whatever the
// number of completions (two when the first meets a row, see
// insertExpectingNew), replacing a stored row only when the incoming one
// wins by the policy's rule (see domain.Keep), whatever the order or
// repetition of the completions; repeats of an earlier event are dropped
// before, as the key stage found them. Appending, it adds them as they are.
func (p Projection) writeCompletions(ctx context.Context, tx pgx.Tx, schema string, cs []domain.Completion, appending bool) error {
	if len(cs) == 0 {
		return nil
	}
	conflict, _, wins := p.keepRule()
	upsert := ` ON CONFLICT (` + conflict + `) DO UPDATE SET
			completed_at = excluded.completed_at, stream_seq = excluded.stream_seq,
			process_id = excluded.process_id, completed_by = excluded.completed_by,
			source = excluded.source, dedup_key = excluded.dedup_key
		WHERE ` + wins
	n := len(cs)
	taskIDs, times, seqs := newColumn(textElements, n), newColumn(timeElements, n), newColumn(int8Elements, n)
	processIDs, users := newColumn(textElements, n), newColumn(textElements, n)
	sources, keys := newColumn(textElements, n), newColumn(textElements, n)
	for _, c := range cs {
		taskIDs.text(c.TaskID)
		times.time(c.CompletedAt)
		seqs.int8(int64(c.Seq))
		processIDs.text(c.ProcessID)
		users.text(c.CompletedBy)
		sources.text(c.Source)
		keys.text(c.DedupKey)
	}
	insert := "INSERT INTO " + table(schema, "completions") + ` AS c
		(task_id, completed_at, stream_seq, process_id, completed_by, source, dedup_key)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])`
	columns := []*column{taskIDs, times, seqs, processIDs, users, sources, keys}
	var err error
	switch {
	case appending:
		_, err = execColumns(ctx, tx, insert, columns...)
	case p.Policy == domain.PolicyAll:
		// A completion already kept is rare: a re-send the key stage no
		// longer remembers, or another completion of the task at the same
		// time. (Under first and latest, a task's next completion meets
		// the row of its previous one.)
		_, err = insertExpectingNew(ctx, tx, insert, upsert, columns...)
	default:
		_, err = execColumns(ctx, tx, insert+upsert, columns...)
	}
	if err != nil {
		return fmt.Errorf("write %s completions: %w", p.Policy, err)
	}
	return nil
}

// upsertStates keeps, per task, the latest completion and the latest
// reopen, in the timeline stored in schema.
func upsertStates(ctx context.Context, tx pgx.Tx, schema string, states []domain.TaskState) error {
	if len(states) == 0 {
		return nil
	}
	n := len(states)
	taskIDs := newColumn(textElements, n)
	completedAt, completedSeq := newColumn(timeElements, n), newColumn(int8Elements, n)
	reopenedAt, reopenedSeq := newColumn(timeElements, n), newColumn(int8Elements, n)
	for _, s := range states {
		taskIDs.text(s.TaskID)
		appendPosition(s.LastCompleted, completedAt, completedSeq)
		appendPosition(s.LastReopened, reopenedAt, reopenedSeq)
	}
	const newerCompletion = `excluded.last_completed_seq IS NOT NULL AND (s.last_completed_seq IS NULL OR
		(excluded.last_completed_at, excluded.last_completed_seq) > (s.last_completed_at, s.last_completed_seq))`
	const newerReopen = `excluded.last_reopened_seq IS NOT NULL AND (s.last_reopened_seq IS NULL OR
		(excluded.last_reopened_at, excluded.last_reopened_seq) > (s.last_reopened_at, s.last_reopened_seq))`
	_, err := execColumns(ctx, tx, "INSERT INTO "+table(schema, "task_state")+` AS s
		(task_id, last_completed_at, last_completed_seq, last_reopened_at, last_reopened_seq)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::timestamptz[], $5::bigint[])
		ON CONFLICT (task_id) DO UPDATE SET
			last_completed_at  = CASE WHEN `+newerCompletion+` THEN excluded.last_completed_at ELSE s.last_completed_at END,
			last_completed_seq = CASE WHEN `+newerCompletion+` THEN excluded.last_completed_seq ELSE s.last_completed_seq END,
			last_reopened_at   = CASE WHEN `+newerReopen+` THEN excluded.last_reopened_at ELSE s.last_reopened_at END,
			last_reopened_seq  = CASE WHEN `+newerReopen+` THEN excluded.last_reopened_seq ELSE s.last_reopened_seq END`,
		taskIDs, completedAt, completedSeq, reopenedAt, reopenedSeq)
	if err != nil {
		return fmt.Errorf("upsert task states: %w", err)
	}
	return nil
}

// appendPosition appends p to the columns of its time and sequence, NULL to
// both when p is zero (no such event yet).
func appendPosition(p domain.Position, at, seq *column) {
	if p.IsZero() {
		at.null()
		seq.null()
		return
	}
	at.time(p.At)
	seq.int8(int64(p.Seq))
}
