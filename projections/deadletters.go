package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

type deadLetter struct {
	msg    Message
	reason string
}

// recordDeadLetter keeps msg with the reason it failed. The same message
// failing again (a retry, a rebuild) updates the row instead.
func (p Projection) recordDeadLetter(ctx context.Context, tx DB, d deadLetter) error {
	header := d.msg.Header
	if header == nil {
		header = map[string][]string{}
	}
	_, err := tx.Exec(ctx, `INSERT INTO dead_letters (projection, stream_seq, subject, headers, body, reason)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (projection, stream_seq) DO UPDATE SET reason = excluded.reason,
			attempts = dead_letters.attempts + 1, last_attempt_at = now(), resolved_at = NULL`,
		p.Name, int64(d.msg.Seq), d.msg.Subject, header, d.msg.Body, d.reason)
	if err != nil {
		return fmt.Errorf("record dead letter for seq %d: %w", d.msg.Seq, err)
	}
	return nil
}

// DeadLetter is an event a projection could not apply.
type DeadLetter struct {
	ID            int64
	Projection    string
	Message       Message
	Reason        string
	Attempts      int
	CreatedAt     time.Time
	LastAttemptAt time.Time
	ResolvedAt    *time.Time // set once a retry applied it
}

// ErrNoDeadLetter is returned for an unknown dead-letter id.
var ErrNoDeadLetter = errors.New("no such dead letter")

const deadLetterColumns = `id, projection, stream_seq, subject, headers, body, reason, attempts,
	created_at, last_attempt_at, resolved_at`

func scanDeadLetter(row pgx.Row) (DeadLetter, error) {
	var d DeadLetter
	var seq int64
	err := row.Scan(&d.ID, &d.Projection, &seq, &d.Message.Subject, &d.Message.Header, &d.Message.Body,
		&d.Reason, &d.Attempts, &d.CreatedAt, &d.LastAttemptAt, &d.ResolvedAt)
	d.Message.Seq = uint64(seq)
	return d, err
}

// DeadLetters lists dead letters, oldest first; resolved ones only when
// includeResolved is set.
func DeadLetters(ctx context.Context, db DB, includeResolved bool, limit int) ([]DeadLetter, error) {
	rows, err := db.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE $1 OR resolved_at IS NULL ORDER BY id LIMIT $2`, includeResolved, limit)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ReadDeadLetter reads dead letter id.
func ReadDeadLetter(ctx context.Context, db DB, id int64) (DeadLetter, error) {
	return readDeadLetter(ctx, db, id, "")
}

// LockDeadLetter reads dead letter id and locks it until tx ends.
func LockDeadLetter(ctx context.Context, tx DB, id int64) (DeadLetter, error) {
	return readDeadLetter(ctx, tx, id, " FOR UPDATE")
}

func readDeadLetter(ctx context.Context, db DB, id int64, lock string) (DeadLetter, error) {
	d, err := scanDeadLetter(db.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = $1`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("%w: %d", ErrNoDeadLetter, id)
	}
	return d, err
}

// ResolveDeadLetter marks dead letter id as applied.
func ResolveDeadLetter(ctx context.Context, tx DB, id int64) error {
	_, err := tx.Exec(ctx, `UPDATE dead_letters SET resolved_at = now(), last_attempt_at = now(),
		attempts = attempts + 1 WHERE id = $1`, id)
	return err
}

// UnresolvedDeadLetters counts the unresolved dead letters by projection;
// a projection without any is absent.
func UnresolvedDeadLetters(ctx context.Context, db DB) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT projection, count(*) FROM dead_letters
		WHERE resolved_at IS NULL GROUP BY projection`)
	if err != nil {
		return nil, fmt.Errorf("count dead letters: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		out[name] = n
	}
	return out, rows.Err()
}
