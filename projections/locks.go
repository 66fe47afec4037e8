package projections

import (
	"context"
	"errors"
	"fmt"
)

// One worker per projection: each kind of worker holds a session-level
// advisory lock (class, hashtext(projection name)) while it works, so a
// dead session releases it with the work done under it.
const (
	lockClassConsumer = 7_301 // held by the one active consumer of a projection
	lockClassRebuild  = 7_302 // held by the one running rebuild of a projection
	lockClassReplica  = 7_303 // held by each replica running consumers
)

// Worker names the consumer of partition p of n of a projection: the
// projection's name when it is not partitioned, else name/p. Its consumer
// lock is taken under that name.
func Worker(projection string, p, n int) string {
	if n <= 1 {
		return projection
	}
	return fmt.Sprintf("%s/%d", projection, p)
}

// ErrRebuildRunning is returned when the projection is already being rebuilt.
var ErrRebuildRunning = errors.New("a rebuild of this projection is already running")

// TryLockConsumer takes name's consumer lock on the session db, reporting
// whether it got it; another session holding it means another replica is
// applying the projection.
func TryLockConsumer(ctx context.Context, db DB, name string) (bool, error) {
	return tryLock(ctx, db, lockClassConsumer, name)
}

// UnlockConsumer releases name's consumer lock taken on the session db.
func UnlockConsumer(ctx context.Context, db DB, name string) error {
	if _, err := db.Exec(ctx, "SELECT pg_advisory_unlock($1, hashtext($2))", lockClassConsumer, name); err != nil {
		return fmt.Errorf("release advisory lock %d of %s: %w", lockClassConsumer, name, err)
	}
	return nil
}

// ConsumerLockHeld reports whether some session holds name's consumer
// lock in the database behind db.
func ConsumerLockHeld(ctx context.Context, db DB, name string) (bool, error) {
	var held bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND classid = $1::int::oid AND objid = hashtext($2)::oid
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`,
		lockClassConsumer, name).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("read the consumer lock of %s: %w", name, err)
	}
	return held, nil
}

// LockRebuild takes name's rebuild lock on the session db, or returns
// ErrRebuildRunning when another session holds it.
func LockRebuild(ctx context.Context, db DB, name string) error {
	locked, err := tryLock(ctx, db, lockClassRebuild, name)
	if err != nil {
		return err
	}
	if !locked {
		return fmt.Errorf("%w: %s", ErrRebuildRunning, name)
	}
	return nil
}

// UnlockRebuild releases name's rebuild lock held by the session db.
func UnlockRebuild(ctx context.Context, db DB, name string) error {
	_, err := db.Exec(ctx, "SELECT pg_advisory_unlock($1, hashtext($2))", lockClassRebuild, name)
	return err
}

func tryLock(ctx context.Context, db DB, class int, name string) (bool, error) {
	var locked bool
	if err := db.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext($2))", class, name).Scan(&locked); err != nil {
		return false, fmt.Errorf("take advisory lock %d of %s: %w", class, name, err)
	}
	return locked, nil
}

// ConsumerActive reports whether a session, in any replica, holds name's
// consumer lock: whether the projection is being applied now.
func ConsumerActive(ctx context.Context, db DB, name string) (bool, error) {
	var active bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = $1::int::oid AND l.objid = hashtext($2)::oid)`, lockClassConsumer, name).Scan(&active)
	if err != nil {
		return false, fmt.Errorf("look for the consumer of %s: %w", name, err)
	}
	return active, nil
}

// LockReplica takes, on the session db, the presence lock of the replica
// id, waiting for it: each replica running consumers holds one (class
// 7303, id) for as long as it runs, so counting them counts the replicas.
func LockReplica(ctx context.Context, db DB, id int32) error {
	if _, err := db.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", lockClassReplica, id); err != nil {
		return fmt.Errorf("take the presence lock of replica %d: %w", id, err)
	}
	return nil
}

// CountReplicas returns how many replica presence locks are held in the
// database behind db.
func CountReplicas(ctx context.Context, db DB) (int32, error) {
	var n int32
	err := db.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 2 AND classid = $1::int::oid
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, lockClassReplica).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count the replicas: %w", err)
	}
	return n, nil
}
