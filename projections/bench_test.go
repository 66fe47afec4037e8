package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// benchEvents makes n completions of distinct tasks, numbered from first.
func benchEvents(first, n int) []domain.Recorded {
	out := make([]domain.Recorded, n)
	for i := range out {
		seq := first + i
		out[i] = domain.Recorded{Seq: uint64(seq), DedupKey: fmt.Sprintf("bench:%d", seq), Event: domain.Event{
			Source: "bench", Type: domain.TypeCompleted, TaskID: fmt.Sprintf("task-%d", seq%5000),
			ProcessID: "p", CompletedBy: "u", OccurredAt: base.Add(time.Duration(seq) * time.Second)}}
	}
	return out
}

// BenchmarkApply compares the consumer's batched apply (one statement per
// table per batch, one transaction) with a naive baseline that checks and
// inserts one event per transaction. Both report events/s.
func BenchmarkApply(b *testing.B) {
	p := projections.ForPolicy(domain.PolicyAll)
	b.Run("batched-500", func(b *testing.B) {
		pool := testenv.NewMigratedPool(b)
		const batch = 500
		seq := 1
		b.ResetTimer()
		for b.Loop() {
			records := benchEvents(seq, batch)
			seq += batch
			entries := make([]projections.Entry, len(records))
			for i, r := range records {
				entries[i] = projections.Entry{Record: r}
			}
			err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
				if _, err := projections.LockCheckpoint(context.Background(), tx, p.Name); err != nil {
					return err
				}
				if _, err := p.ApplyEntries(context.Background(), tx, p.Name, entries); err != nil {
					return err
				}
				return projections.SetCheckpoint(context.Background(), tx, p.Name, uint64(seq-1))
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("naive-one-per-tx", func(b *testing.B) {
		pool := testenv.NewMigratedPool(b)
		seq := 1
		b.ResetTimer()
		for b.Loop() {
			if err := applyNaively(pool, benchEvents(seq, 1)[0]); err != nil {
				b.Fatal(err)
			}
			seq++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// applyNaively is the baseline: look the key up, insert it, insert the
// completion and move the checkpoint, one round trip each, in a
// transaction per event.
func applyNaively(pool *pgxpool.Pool, r domain.Recorded) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var seen bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM event_keys.keys WHERE dedup_key = $1)", r.DedupKey).Scan(&seen); err != nil || seen {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO event_keys.keys (dedup_key, stream_seq, body_digest, stored_at) VALUES ($1, $2, '', now())", r.DedupKey, int64(r.Seq)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO completions_all.completions
			(task_id, completed_at, stream_seq, process_id, completed_by, source, dedup_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
			r.TaskID, r.OccurredAt, int64(r.Seq), r.ProcessID, r.CompletedBy, r.Source, r.DedupKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE completions_all.checkpoint SET last_seq = $1", int64(r.Seq))
		return err
	})
}
