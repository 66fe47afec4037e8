package projections

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/domain"
)

// The key stage is the durable dedup tier. It is applied from the stream
// like a read model, ahead of them (a read model applies only what the key
// stage has), and records per dedup key the original event: the first to
// use the key within the retention, with its body digest and the stream's
// timestamp. An event that uses a key again within the retention, measured
// between the two events' stream timestamps, is a repeat: a duplicate, or,
// for a sender-chosen key with another body, a reused key. Every decision
// is thus a function of the stream alone, and a rebuild decides exactly as
// the live stage did. The read models skip duplicates and set reused keys
// aside as dead letters; the ingest answers re-sends from the originals.

// ReasonKeyReused starts the reason of a dead letter whose sender-chosen
// key was used before for another body; ingest answers such a re-send with
// the same code.
const ReasonKeyReused = "idempotency_key_reused"

// EventKeys is the key stage.
var EventKeys = Projection{Name: "event_keys", Keys: true}

// Original is the event that first used a dedup key within the retention.
type Original struct {
	Key      string
	Seq      uint64
	Digest   string // domain.BodyDigest of its body
	StoredAt time.Time
}

type repeat struct {
	seq, originalSeq uint64
	key              string
	reused           bool
}

// applyKeys records the originals and repeats among entries, in stream
// order, and forgets originals older than the retention before the newest
// entry's timestamp (which changes no later decision). It returns, for each
// exact duplicate among the repeats, how long after its original it was
// stored (reused keys are not re-sends and are left out).
//
// Most batches bring only keys the table does not hold (the ingest answers
// re-sends before they are stored). So it first decides as if the table
// held none of the batch's keys, and records the originals so decided with
// a plain INSERT, which fails if one is there after all: only then does it
// read the table's originals of those keys and decide again knowing them.
// Either way the decisions are those the table's originals call for.
func (p Projection) applyKeys(ctx context.Context, tx pgx.Tx, schema string, entries []Entry) (Applied, error) {
	// Deciding with no original known, every key of the batch's decoded
	// entries becomes one of d.fresh.
	d := p.decideKeys(entries, map[string]Original{})
	if len(d.fresh) == 0 {
		return Applied{}, nil // no entry decoded
	}
	err := inSavepoint(ctx, tx, func(sp pgx.Tx) error { return insertOriginals(ctx, sp, schema, d.fresh, "") })
	if isUniqueViolation(err) {
		var known map[string]Original
		if known, err = Originals(ctx, tx, schema, slices.Collect(maps.Keys(d.fresh)), time.Time{}); err != nil {
			return Applied{}, err
		}
		d = p.decideKeys(entries, known)
		// A key the table holds already is one past its retention, not
		// yet forgotten.
		err = insertOriginals(ctx, tx, schema, d.fresh, ` ON CONFLICT (dedup_key) DO UPDATE SET
			stream_seq = excluded.stream_seq, body_digest = excluded.body_digest, stored_at = excluded.stored_at`)
	}
	if err != nil {
		return Applied{}, err
	}
	if err := insertRepeats(ctx, tx, schema, d.repeats); err != nil {
		return Applied{}, err
	}
	if p.KeyRetention > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM "+table(schema, "keys")+" WHERE stored_at < $1",
			d.newest.Add(-p.KeyRetention)); err != nil {
			return Applied{}, fmt.Errorf("forget expired keys: %w", err)
		}
	}
	return d.applied, nil
}

// keyDecisions is what the key stage decided for a batch.
type keyDecisions struct {
	fresh   map[string]Original // the originals to record, by key
	repeats []repeat
	newest  time.Time // the latest stored time among the decoded entries
	applied Applied   // with the re-sends' delays
}

// decideKeys tells, in stream order, which entries are originals and which
// repeat one, known holding the originals recorded before; it adds the new
// originals to known.
func (p Projection) decideKeys(entries []Entry, known map[string]Original) keyDecisions {
	d := keyDecisions{fresh: map[string]Original{}}
	for _, e := range entries {
		if e.DecodeErr != nil {
			continue
		}
		at := e.Message.Stored
		if at.After(d.newest) {
			d.newest = at
		}
		digest := domain.BodyDigest(e.Message.Body)
		o, ok := known[e.Record.DedupKey]
		if !ok || (p.KeyRetention > 0 && at.Sub(o.StoredAt) > p.KeyRetention) {
			o = Original{Key: e.Record.DedupKey, Seq: e.Message.Seq, Digest: digest, StoredAt: at}
			known[o.Key], d.fresh[o.Key] = o, o
			continue
		}
		r := repeat{seq: e.Message.Seq, originalSeq: o.Seq, key: o.Key, reused: e.ExplicitKey && digest != o.Digest}
		d.repeats = append(d.repeats, r)
		if !r.reused && !at.IsZero() && !o.StoredAt.IsZero() {
			d.applied.ResendDelays = append(d.applied.ResendDelays, at.Sub(o.StoredAt))
		}
	}
	return d
}

// Originals returns the originals of keys stored at or after since, by key.
//
// The query is planned anew for each call, with the keys at hand: a plan
// prepared once, while the table was small, would go on scanning it whole
// and comparing every row with every key as it grows. It looks the keys up
// by the primary key and filters by time here: with the time in the query,
// the planner may prefer the stored_at index over every key within the
// retention.
func Originals(ctx context.Context, db DB, schema string, keys []string, since time.Time) (map[string]Original, error) {
	rows, err := db.Query(ctx, "SELECT dedup_key, stream_seq, body_digest, stored_at FROM "+table(schema, "keys")+
		" WHERE dedup_key = ANY($1)", pgx.QueryExecModeExec, keys)
	if err != nil {
		return nil, fmt.Errorf("read dedup keys: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Original, len(keys))
	for rows.Next() {
		var o Original
		var seq int64
		if err := rows.Scan(&o.Key, &seq, &o.Digest, &o.StoredAt); err != nil {
			return nil, fmt.Errorf("read dedup keys: %w", err)
		}
		if o.StoredAt.Before(since) {
			continue
		}
		o.Seq = uint64(seq)
		out[o.Key] = o
	}
	return out, rows.Err()
}

// insertOriginals records originals, onConflict deciding what becomes of
// a key the table holds already ("" fails on one).
func insertOriginals(ctx context.Context, tx pgx.Tx, schema string, originals map[string]Original, onConflict string) error {
	if len(originals) == 0 {
		return nil
	}
	n := len(originals)
	keys, seqs, digests, times := newColumn(textElements, n), newColumn(int8Elements, n), newColumn(textElements, n), newColumn(timeElements, n)
	for _, o := range originals {
		keys.text(o.Key)
		seqs.int8(int64(o.Seq))
		digests.text(o.Digest)
		times.time(o.StoredAt)
	}
	_, err := execColumns(ctx, tx, "INSERT INTO "+table(schema, "keys")+` (dedup_key, stream_seq, body_digest, stored_at)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[])`+onConflict, keys, seqs, digests, times)
	if err != nil {
		return fmt.Errorf("record dedup keys: %w", err)
	}
	return nil
}

func insertRepeats(ctx context.Context, tx pgx.Tx, schema string, repeats []repeat) error {
	if len(repeats) == 0 {
		return nil
	}
	n := len(repeats)
	seqs, originals, keys, reused := newColumn(int8Elements, n), newColumn(int8Elements, n), newColumn(textElements, n), newColumn(boolElements, n)
	for _, r := range repeats {
		seqs.int8(int64(r.seq))
		originals.int8(int64(r.originalSeq))
		keys.text(r.key)
		reused.bool(r.reused)
	}
	_, err := execColumns(ctx, tx, "INSERT INTO "+table(schema, "repeats")+` (stream_seq, original_seq, dedup_key, reused)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::boolean[]) ON CONFLICT DO NOTHING`,
		seqs, originals, keys, reused)
	if err != nil {
		return fmt.Errorf("record repeated keys: %w", err)
	}
	return nil
}

// repeatsAmong reads what the live key stage decided for the entries that
// repeat an original, by stream sequence.
func repeatsAmong(ctx context.Context, tx DB, entries []Entry) (map[uint64]repeat, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	first, last := entries[0].Message.Seq, entries[0].Message.Seq
	for _, e := range entries {
		first, last = min(first, e.Message.Seq), max(last, e.Message.Seq)
	}
	rows, err := tx.Query(ctx, "SELECT stream_seq, original_seq, dedup_key, reused FROM "+table(EventKeys.Name, "repeats")+
		" WHERE stream_seq BETWEEN $1 AND $2", int64(first), int64(last))
	if err != nil {
		return nil, fmt.Errorf("read repeated keys: %w", err)
	}
	defer rows.Close()
	out := map[uint64]repeat{}
	for rows.Next() {
		var r repeat
		var seq, original int64
		if err := rows.Scan(&seq, &original, &r.key, &r.reused); err != nil {
			return nil, fmt.Errorf("read repeated keys: %w", err)
		}
		r.seq, r.originalSeq = uint64(seq), uint64(original)
		out[r.seq] = r
	}
	return out, rows.Err()
}

func (r repeat) reason() string {
	return fmt.Sprintf("%s: key %q was used by stream sequence %d for a different body", ReasonKeyReused, r.key, r.originalSeq)
}
