package projections

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// A rebuild is blue/green: the stream is replayed into a shadow schema
// while the live one keeps serving, then the schemas are swapped by renaming
// in one transaction.

// ShadowSchema is where a rebuild of p is built.
func (p Projection) ShadowSchema() string { return p.Name + "_rebuild" }

func (p Projection) retiredSchema() string { return p.Name + "_retired" }

// PrepareShadow drops what a previous, unfinished rebuild left, creates an
// empty shadow schema with checkpoints for the given number of partitions,
// and records the rebuild as started.
func (p Projection) PrepareShadow(ctx context.Context, db DB, targetSeq uint64, partitions int) error {
	shadow := pgx.Identifier{p.ShadowSchema()}.Sanitize()
	if _, err := db.Exec(ctx, "DROP SCHEMA IF EXISTS "+shadow+" CASCADE"); err != nil {
		return fmt.Errorf("drop old shadow schema: %w", err)
	}
	if err := p.createSchema(ctx, db, p.ShadowSchema()); err != nil {
		return err
	}
	if err := SplitCheckpoint(ctx, db, p.ShadowSchema(), max(partitions, 1)); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `INSERT INTO projection_rebuilds (projection, target_seq) VALUES ($1, $2)
		ON CONFLICT (projection) DO UPDATE SET started_at = now(), updated_at = now(), applied_seq = 0,
			target_seq = excluded.target_seq, finished_at = NULL, failed_at = NULL, error = NULL`, p.Name, int64(targetSeq))
	if err != nil {
		return fmt.Errorf("record rebuild start: %w", err)
	}
	return nil
}

// DropShadowIndexes readies the shadow for ReplayEntries: it drops the
// shadow's secondary indexes (those no upsert needs: not unique) and, of
// the read model a replay appends to, the unique ones and the primary key
// too. It returns the statements that, once the bulk of the replay is
// loaded, keep of each set of rows the unique indexes would have refused
// the one they would have kept, and create every index again, for
// FinishShadow. Building an index once over loaded rows is cheaper than
// maintaining it row by row, and appending is cheaper than an upsert.
func (p Projection) DropShadowIndexes(ctx context.Context, db DB) ([]string, error) {
	shadow, appended := p.ShadowSchema(), ""
	if key, _, _ := p.keepRule(); key != "" {
		appended = table(p.ShadowSchema(), p.readModel())
	}
	rows, err := db.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid),
			coalesce(con.conname, ''), coalesce(pg_get_constraintdef(con.oid), '')
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
		WHERE n.nspname = $1 AND (NOT i.indisunique OR i.indrelid = to_regclass($2))
		ORDER BY i.indisunique DESC, c.relname`, shadow, pgtype.Text{String: appended, Valid: appended != ""})
	if err != nil {
		return nil, fmt.Errorf("list shadow indexes: %w", err)
	}
	var drops, restores []string
	for rows.Next() {
		var name, def, constraint, constraintDef string
		if err := rows.Scan(&name, &def, &constraint, &constraintDef); err != nil {
			rows.Close()
			return nil, err
		}
		if constraint == "" {
			drops, restores = append(drops, "DROP INDEX "+name), append(restores, def)
			continue
		}
		alter := "ALTER TABLE " + appended + " "
		constraint = pgx.Identifier{constraint}.Sanitize()
		drops = append(drops, alter+"DROP CONSTRAINT "+constraint)
		restores = append(restores, alter+"ADD CONSTRAINT "+constraint+" "+constraintDef)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list shadow indexes: %w", err)
	}
	for _, drop := range drops {
		if _, err := db.Exec(ctx, drop); err != nil {
			return nil, fmt.Errorf("ready the shadow for its replay: %s: %w", drop, err)
		}
	}
	if appended != "" {
		restores = append([]string{p.keepReplayed()}, restores...)
	}
	return restores, nil
}

// keepReplayed deletes, of the rows ReplayEntries appended to the shadow's
// read model, those its unique index would have refused or replaced: of
// the rows sharing a key, all but the one the projection keeps.
func (p Projection) keepReplayed() string {
	key, order, _ := p.keepRule()
	t := table(p.ShadowSchema(), p.readModel())
	return "DELETE FROM " + t + " WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY " + key +
		" ORDER BY " + order + ") AS rank FROM " + t + " WHERE (" + key + ") IN (SELECT " + key + " FROM " + t +
		" GROUP BY " + key + " HAVING count(*) > 1)) ranked WHERE rank > 1)"
}

// FinishShadow runs the statements DropShadowIndexes returned, then
// analyzes the shadow's tables: swapped in freshly loaded, they would
// otherwise be planned for as if empty until autovacuum came round. After
// it, the shadow takes ApplyEntries, no longer ReplayEntries.
func (p Projection) FinishShadow(ctx context.Context, db DB, restores []string) error {
	for _, stmt := range restores {
		if _, err := db.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("finish the shadow: %s: %w", stmt, err)
		}
	}
	rows, err := db.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1`, p.ShadowSchema())
	if err != nil {
		return fmt.Errorf("list shadow tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list shadow tables: %w", err)
	}
	if len(tables) == 0 {
		return nil // a bare ANALYZE would analyze the whole database
	}
	if _, err := db.Exec(ctx, "ANALYZE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("analyze the shadow: %w", err)
	}
	return nil
}

// RecordProgress notes how far the rebuild of p has got.
func (p Projection) RecordProgress(ctx context.Context, db DB, applied, target uint64) error {
	_, err := db.Exec(ctx, `UPDATE projection_rebuilds SET applied_seq = $2, target_seq = $3, updated_at = now()
		WHERE projection = $1`, p.Name, int64(applied), int64(target))
	return err
}

// RecordFailure notes that the rebuild of p failed with cause; the live
// tables are as they were.
func (p Projection) RecordFailure(ctx context.Context, db DB, cause error) error {
	_, err := db.Exec(ctx, `UPDATE projection_rebuilds SET failed_at = now(), updated_at = now(), error = $2
		WHERE projection = $1 AND finished_at IS NULL`, p.Name, cause.Error())
	return err
}

// RecordStartFailure notes that the rebuild of p, towards targetSeq,
// failed with cause before it could replay anything (while preparing the
// shadow), replacing whatever the previous rebuild recorded.
func (p Projection) RecordStartFailure(ctx context.Context, db DB, targetSeq uint64, cause error) error {
	_, err := db.Exec(ctx, `INSERT INTO projection_rebuilds (projection, target_seq, failed_at, error) VALUES ($1, $2, now(), $3)
		ON CONFLICT (projection) DO UPDATE SET started_at = now(), updated_at = now(), applied_seq = 0,
			target_seq = excluded.target_seq, finished_at = NULL, failed_at = now(), error = excluded.error`,
		p.Name, int64(targetSeq), cause.Error())
	return err
}

// LockLive locks the live checkpoint table against every other session and
// returns the checkpoint; a live schema that was dropped counts as
// checkpoint 0. The swap that follows drops the old tables, which needs
// them exclusively: taking the whole checkpoint table exclusively first,
// rather than its row, means a live writer (whose first statement is
// LockCheckpoint) queues before touching any of the projection's tables
// and so never holds a lock the swap then waits for. Of a partitioned
// projection it returns the furthest partition's checkpoint: the shadow
// must hold everything any partition applied.
func (p Projection) LockLive(ctx context.Context, tx DB) (uint64, error) {
	if exists, err := p.liveExists(ctx, tx); err != nil || !exists {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table(p.Name, "checkpoint")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return 0, fmt.Errorf("lock checkpoint table of %s: %w", p.Name, err)
	}
	return LockCheckpoint(ctx, tx, p.Name)
}

// LiveCheckpoint reads the live checkpoint without locking it; a live
// schema that was dropped counts as checkpoint 0.
func (p Projection) LiveCheckpoint(ctx context.Context, db DB) (uint64, error) {
	if exists, err := p.liveExists(ctx, db); err != nil || !exists {
		return 0, err
	}
	return Checkpoint(ctx, db, p.Name)
}

func (p Projection) liveExists(ctx context.Context, db DB) (bool, error) {
	var exists bool
	err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table(p.Name, "checkpoint")).Scan(&exists)
	return exists, err
}

// SwapShadow makes the shadow schema live, in tx. The caller must hold the
// live checkpoint lock (LockLive) and have applied the shadow at least as
// far as the live checkpoint. Queries running meanwhile finish on the old
// tables; queries after commit read the new ones.
func (p Projection) SwapShadow(ctx context.Context, tx DB) error {
	live, shadow, retired := pgx.Identifier{p.Name}.Sanitize(), pgx.Identifier{p.ShadowSchema()}.Sanitize(),
		pgx.Identifier{p.retiredSchema()}.Sanitize()
	var liveExists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", p.Name).Scan(&liveExists); err != nil {
		return err
	}
	statements := []string{"ALTER SCHEMA " + shadow + " RENAME TO " + live}
	if liveExists {
		statements = []string{
			"ALTER SCHEMA " + live + " RENAME TO " + retired,
			statements[0],
			"DROP SCHEMA " + retired + " CASCADE",
		}
	}
	for _, sql := range statements {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("swap in rebuilt %s: %w", p.Name, err)
		}
	}
	_, err := tx.Exec(ctx, "UPDATE projection_rebuilds SET finished_at = now(), updated_at = now() WHERE projection = $1", p.Name)
	return err
}

// RebuildStatus is the latest rebuild of a projection: running (its
// process holds the rebuild lock), finished, failed with Error, or neither
// (interrupted: its process died).
type RebuildStatus struct {
	Projection string
	Running    bool
	StartedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt *time.Time
	FailedAt   *time.Time
	Error      string
	AppliedSeq uint64
	TargetSeq  uint64
}

// Rebuilds returns the latest rebuild of each projection that was ever
// rebuilt, by name; running ones are those whose session holds the rebuild
// lock.
func Rebuilds(ctx context.Context, db DB) (map[string]RebuildStatus, error) {
	rows, err := db.Query(ctx, `SELECT projection, started_at, updated_at, finished_at, failed_at, coalesce(error, ''),
			applied_seq, target_seq, finished_at IS NULL AND failed_at IS NULL AND EXISTS (SELECT 1 FROM pg_locks l
			WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
			AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND l.classid = $1::int::oid AND l.objid = hashtext(r.projection)::oid)
		FROM projection_rebuilds r`, lockClassRebuild)
	if err != nil {
		return nil, fmt.Errorf("read rebuild progress: %w", err)
	}
	defer rows.Close()
	out := map[string]RebuildStatus{}
	for rows.Next() {
		var r RebuildStatus
		var applied, target int64
		if err := rows.Scan(&r.Projection, &r.StartedAt, &r.UpdatedAt, &r.FinishedAt, &r.FailedAt, &r.Error,
			&applied, &target, &r.Running); err != nil {
			return nil, err
		}
		r.AppliedSeq, r.TargetSeq = uint64(applied), uint64(target)
		out[r.Projection] = r
	}
	return out, rows.Err()
}
