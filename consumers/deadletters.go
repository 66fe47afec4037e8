package consumers

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/projections"
)

// RetryDeadLetter applies dead letter id to its projection again, from the
// raw message it kept; run it once the cause is fixed. It reports whether the
// event applied (the dead letter is then resolved) and otherwise the reason
// it still fails. Retrying a resolved dead letter does nothing.
func RetryDeadLetter(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, id int64) (resolved bool, reason string, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		d, err := projections.ReadDeadLetter(ctx, tx, id)
		if err != nil {
			return err
		}
		proj, ok := projections.ByName(d.Projection)
		if !ok {
			return fmt.Errorf("dead letter %d belongs to unknown projection %q", id, d.Projection)
		}
		// Serialize with the projection's consumer and rebuild swap, taking
		// the checkpoint first as they do: a swap's catch-up may write this
		// very dead letter while holding the checkpoint.
		if _, err := projections.LockCheckpoint(ctx, tx, proj.Name); err != nil {
			return err
		}
		if d, err = projections.LockDeadLetter(ctx, tx, id); err != nil {
			return err
		}
		if d.ResolvedAt != nil {
			resolved = true
			return nil
		}
		m := d.Message
		dead, err := proj.ApplyEntries(ctx, tx, proj.Name, []projections.Entry{decodeEntry(m.Seq, m.Subject, m.Header, m.Body)})
		if err != nil {
			return err
		}
		if dead.DeadLetters > 0 {
			again, err := projections.LockDeadLetter(ctx, tx, id)
			reason = again.Reason
			return err
		}
		resolved = true
		return projections.ResolveDeadLetter(ctx, tx, id)
	})
	return resolved, reason, err
}
