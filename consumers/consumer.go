// Package consumers feeds the event stream into the projections: a Reader
// per group of projections (projections.Group) and partition, from the
// lowest of their checkpoints, each batch applied to every projection of
// the group in one Postgres transaction that also moves their checkpoints.
// Reader states why that applies every event exactly once.
package consumers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/metrics"
	"github.com/taskledger/taskledger/projections"
)

// Options configures a Consumer.
type Options struct {
	ReadOptions               // what to read (the partition's subjects), batch bounds (one transaction each)
	StandbyPoll time.Duration // how often a standby tries for the lock (default 1s)
	// Partition is the part of the group's projections this consumer
	// applies, of the group's Partitions.
	Partition int
	// Position tells where the stream and the partition's events end, to
	// notice a stalled reader and to move an idle partition's checkpoint
	// past other partitions' events. Needed when Partitions > 1; nil reads
	// the stream's end only.
	Position Position
	// Share, when set, limits this replica to its fair share of the
	// partitions; nil takes every free one.
	Share *Share
	// DedupRetention is how long the key stage remembers a key, between
	// stream timestamps. Zero remembers forever.
	DedupRetention time.Duration
	// Metrics records batches and restarts; nil records nothing.
	Metrics *metrics.Metrics
	// DrainTimeout bounds how long the batch under way may take to commit
	// once Run's context ends; zero means 30s.
	DrainTimeout time.Duration
}

// Position reads where the stream and a partition's events end;
// eventlog.Position is the implementation.
type Position interface {
	LastSeq(ctx context.Context) (uint64, error)
	PartitionLastSeq(ctx context.Context, partition int) (uint64, error)
}

// Consumer keeps one partition of a group of projections up to date. Run
// one per partition in every replica: the one holding the advisory locks of
// the partition's projections works, the others stand by.
type Consumer struct {
	group  projections.Group
	worker string
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	opts   Options
	log    zerolog.Logger
	active atomic.Bool
	// known is, by stage, the checkpoint as this consumer last read or
	// wrote it; its reader has delivered everything up to the lowest. Used
	// by Run's goroutine only.
	known []uint64
	// undelivered is the partition's last sequence as an idle pass found
	// it beyond known, or 0: found again on the next idle pass, the reader
	// has stalled. Used by Run's goroutine only.
	undelivered uint64
	// stalls holds, by stage, why the stage cannot apply, or nil while it
	// can.
	stalls []atomic.Pointer[Stall]
	// failing marks, by stage, a stage whose last batch failed: the next
	// batch applies it inside a savepoint of its own, so that the other
	// stages go on without it. Used by Run's goroutine only.
	failing []bool
	// helpers are, by stage, the sessions that apply large batches in
	// parallel (see applyParallel). Used by Run's goroutine only.
	helpers helperSessions
}

// Stall is why a consumer cannot apply a stage: the error of its last
// attempt, or the key stage it waits for, since when and after how many
// attempts.
type Stall struct {
	Reason   string
	Since    time.Time
	Attempts int
}

// stallAfter is how many failures in a row make a consumer stalled: one
// failure is a hiccup, retried at once.
const stallAfter = 3

// Stalled returns why the consumer cannot apply the named projection, or
// nil when it applies it (or stands by for another replica). A stage is
// stalled after stallAfter failures in a row, of its own or of the whole
// consumer (its reader, its session), or while the key stage it waits for
// has not moved for keysPatience; it is no longer once it applies a batch,
// or the consumer finds nothing to apply, or stands by.
func (c *Consumer) Stalled(projection string) *Stall {
	for i, p := range c.group.Stages {
		if p.Name == projection {
			return c.stalls[i].Load()
		}
	}
	return nil
}

// stageError is the failure of one stage of a batch.
type stageError struct {
	stage int
	err   error
}

func (e *stageError) Error() string { return e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// stageFailed is err as the failure of stage i.
func (c *Consumer) stageFailed(i int, err error) error {
	return &stageError{stage: i, err: fmt.Errorf("%s: %w", c.group.Stages[i].Name, err)}
}

// New returns a consumer of partition opts.Partition of group.
func New(group projections.Group, pool *pgxpool.Pool, js jetstream.JetStream, opts Options, log zerolog.Logger) *Consumer {
	opts.ReadOptions = opts.ReadOptions.withDefaults()
	if opts.StandbyPoll <= 0 {
		opts.StandbyPoll = time.Second
	}
	group.Partitions = max(group.Partitions, 1)
	group.Stages = slices.Clone(group.Stages)
	for i := range group.Stages {
		group.Stages[i].KeyRetention = opts.DedupRetention
	}
	if opts.Position == nil {
		opts.Position = streamEnd{eventlog.NewPosition(js, eventlog.StreamConfig{Name: opts.Stream})}
	}
	worker := projections.Worker(group.Name, opts.Partition, group.Partitions)
	l := log.With().Str("consumer", group.Name)
	if group.Partitions > 1 {
		l = l.Int("partition", opts.Partition)
	}
	n := len(group.Stages)
	return &Consumer{group: group, worker: worker, pool: pool, js: js, opts: opts, log: l.Logger(),
		known: make([]uint64, n), stalls: make([]atomic.Pointer[Stall], n), failing: make([]bool, n),
		helpers: newHelperSessions(pool, n, func(i int) string { return SessionName(worker) + "/" + group.Stages[i].Name })}
}

// SessionName is the application_name of a worker's consumer session, to
// find it in pg_stat_activity (and, by its pid, its lock in pg_locks).
func SessionName(worker string) string { return "taskledger-consumer-" + worker }

// Projections names the projections this consumer applies.
func (c *Consumer) Projections() []string {
	names := make([]string, len(c.group.Stages))
	for i, p := range c.group.Stages {
		names[i] = p.Name
	}
	return names
}

// Partition is the partition this consumer applies.
func (c *Consumer) Partition() int { return c.opts.Partition }

// Partitions is how many partitions its projections are split into.
func (c *Consumer) Partitions() int { return c.group.Partitions }

// Active reports whether this consumer holds the lock and is applying.
func (c *Consumer) Active() bool { return c.active.Load() }

// Run applies the stream to the projection until ctx ends. Failures (the
// database or NATS going away, a lost lock) are retried with backoff and
// logged once per outage; Run returns only when ctx is done.
func (c *Consumer) Run(ctx context.Context) {
	var out outage
	for ctx.Err() == nil {
		err := c.runActive(ctx, &out)
		if ctx.Err() != nil {
			return
		}
		pause := c.opts.StandbyPoll
		if errors.Is(err, errHandOver) {
			c.log.Info().Msg("another replica joined; handing this partition over")
		} else {
			out.failed(c.log, err)
			if out.attempts >= stallAfter {
				st := &Stall{Reason: err.Error(), Since: out.since, Attempts: out.attempts}
				for _, i := range c.stalledBy(err) {
					c.stalls[i].Store(st)
				}
			}
			for _, p := range c.group.Stages {
				c.opts.Metrics.ConsumerRestarted(p.Name)
			}
			pause = out.backoff()
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// runActive waits for the lock on a dedicated session, then applies batches
// on that same session until an error: if the session dies, so does the
// lock, and so does the work done under it.
func (c *Consumer) runActive(ctx context.Context, out *outage) error {
	conn, err := connectProjectionSession(ctx, c.pool, SessionName(c.worker))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	defer c.helpers.close(context.WithoutCancel(ctx))
	if err := c.waitForLock(ctx, conn, out); err != nil {
		return err
	}
	handedOver := false
	defer func() {
		c.active.Store(false)
		if c.opts.Share != nil && !handedOver {
			c.opts.Share.release(c.group.Name)
		}
	}()
	guard, err := guardStream(ctx, c.js, c.opts.Stream, conn)
	if err != nil {
		return err
	}
	c.active.Store(true)

	if err := c.readCheckpoints(ctx, conn); err != nil {
		return err
	}
	checkpoint := slices.Min(c.known)
	reader, err := OpenReader(ctx, c.js, c.opts.ReadOptions, checkpoint+1)
	if err != nil {
		return err
	}
	defer reader.Close()
	c.log.Info().Uint64("checkpoint", checkpoint).Msg("consumer active")

	for ctx.Err() == nil {
		if c.opts.Share != nil && c.opts.Share.handOver(c.group.Name, c.group.Partitions) {
			handedOver = true
			return errHandOver
		}
		batch, err := reader.Next(ctx)
		if err != nil {
			return err
		}
		// Also when idle (an empty batch), so a reset stream shows soon.
		if err := guard.check(ctx); err != nil {
			return err
		}
		if len(batch.Entries) == 0 {
			caughtUp, err := c.passIdle(ctx, conn)
			if err != nil {
				return err
			}
			if caughtUp { // not while the stream holds events the reader has not delivered
				c.recovered(out)
			}
			continue
		}
		if c.group.WaitsForKeys() {
			if err := c.awaitKeys(ctx, conn, batch.Entries[len(batch.Entries)-1].Message.Seq); err != nil {
				return err
			}
		}
		// Finish the batch even when shutdown starts, within DrainTimeout.
		batchCtx, cancel := drainContext(ctx, c.opts.DrainTimeout)
		err = c.applyBatch(batchCtx, conn, batch.Entries)
		cancel()
		if err != nil {
			return err
		}
		c.recovered(out)
	}
	return nil
}

// stalledBy lists the stages that err keeps from applying: the stage it
// is of, and the stages waiting for it if it is the key stage; every stage
// when it is the consumer's own, or the database's as a whole (its session
// ended or cut), even if it surfaced in one stage.
func (c *Consumer) stalledBy(err error) []int {
	var stageErr *stageError
	ofStage := errors.As(err, &stageErr) && !sessionFault(err)
	var out []int
	for i, p := range c.group.Stages {
		if !ofStage || i == stageErr.stage ||
			(c.group.Stages[stageErr.stage].Keys && p.WaitsForKeys()) {
			out = append(out, i)
		}
	}
	return out
}

// recovered ends an outage and every stall: the consumer applies again.
func (c *Consumer) recovered(out *outage) {
	out.recovered(c.log)
	for i := range c.stalls {
		c.stalls[i].Store(nil)
	}
}

// awaitKeys waits until the key stage has applied the stream through seq.
// While the key stage does not move for keysPatience, the consumer shows as
// stalled, waiting for it.
func (c *Consumer) awaitKeys(ctx context.Context, conn *pgx.Conn, seq uint64) error {
	for {
		err := waitForKeys(ctx, conn, seq, keysPatience)
		if !errors.Is(err, ErrKeysBehind) {
			return err
		}
		keys, err := projections.Checkpoint(ctx, conn, projections.EventKeys.Name)
		if err != nil {
			return err
		}
		stall := &Stall{Reason: fmt.Sprintf("waiting for the key stage %s, which has not moved for %s: "+
			"it is at sequence %d, the next batch needs %d", projections.EventKeys.Name, keysPatience, keys, seq),
			Since: time.Now().Add(-keysPatience)}
		for i := range c.stalls {
			c.stalls[i].Store(stall)
		}
		err = waitForKeys(ctx, conn, keys+1, 0) // until it moves again
		for i := range c.stalls {
			c.stalls[i].CompareAndSwap(stall, nil)
		}
		if err != nil {
			return err
		}
	}
}

// drainContext is ctx without its cancellation, so that work begun before
// shutdown completes, but ending timeout (30s when zero) after ctx does.
func drainContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	drain, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		timer := time.AfterFunc(timeout, cancel)
		context.AfterFunc(drain, func() { timer.Stop() })
	})
	return drain, func() {
		stop()
		cancel()
	}
}

// connectProjectionSession opens a session of its own for writing a
// projection, named name in pg_stat_activity.
//
// Its commits are asynchronous (synchronous_commit off): a commit returns
// before its WAL reaches the disk, so a crash of the database server can
// lose the last few hundred milliseconds of commits. That is safe here and
// only here: every projection write is derived from the stream, and the
// checkpoint is committed in the same transaction as the rows it covers, so
// what is lost is a suffix of whole transactions, checkpoint included, and
// the consumer replays it from the checkpoint that survived. Nothing outside
// the database learns of a commit (no acknowledgement is sent), so nothing
// can run ahead of what was lost.
//
// Its statements are planned at each execution (plan_cache_mode
// force_custom_plan): a session starts on tables that may be empty, a
// catch-up or a rebuild fills them within seconds, and a plan cached at
// the start (a sequential scan, say) would stay until autovacuum next
// analyzes them. Planning costs little beside a batch's writes.
func connectProjectionSession(ctx context.Context, pool *pgxpool.Pool, name string) (*pgx.Conn, error) {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = name
	cfg.RuntimeParams["synchronous_commit"] = "off"
	cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres: %w", err)
	}
	return conn, nil
}

// errHandOver ends a consumer's work on its partition so that a replica
// below its fair share takes it.
var errHandOver = errors.New("partition handed over")

// waitForLock takes the worker's lock once this replica's share allows it
// and no other replica holds it. Standing by ends an outage: the database
// answers, and another replica applies the partition.
func (c *Consumer) waitForLock(ctx context.Context, conn *pgx.Conn, out *outage) error {
	announced := false
	for {
		locked, err := c.tryLock(ctx, conn)
		if err != nil || locked {
			return err
		}
		if !announced {
			c.recovered(out)
			c.log.Info().Msg("another replica is applying this partition, or this replica has its share; standing by")
			announced = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.opts.StandbyPoll):
		}
	}
}

// tryLock takes the consumer locks of every stage's partition, or none:
// another session holding any of them means another replica applies them.
func (c *Consumer) tryLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	if c.opts.Share != nil && !c.opts.Share.take(c.group.Name, c.group.Partitions) {
		return false, nil
	}
	locked, err := c.lockStages(ctx, conn)
	if !locked && c.opts.Share != nil {
		c.opts.Share.release(c.group.Name)
	}
	return locked, err
}

// lockStages takes the consumer lock of each stage's partition in turn,
// releasing those it took when one is held elsewhere or fails.
func (c *Consumer) lockStages(ctx context.Context, conn *pgx.Conn) (bool, error) {
	for i, p := range c.group.Stages {
		locked, err := projections.TryLockConsumer(ctx, conn, projections.Worker(p.Name, c.opts.Partition, c.group.Partitions))
		if locked && err == nil {
			continue
		}
		for _, taken := range c.group.Stages[:i] {
			err = errors.Join(err, projections.UnlockConsumer(ctx, conn, projections.Worker(taken.Name, c.opts.Partition, c.group.Partitions)))
		}
		return false, err
	}
	return true, nil
}

// readCheckpoints reads the partition's checkpoint of every stage into
// known.
func (c *Consumer) readCheckpoints(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for i, p := range c.group.Stages {
			seq, err := projections.LockPartition(ctx, tx, p.Name, c.opts.Partition)
			if err != nil {
				return err
			}
			c.known[i] = seq
		}
		return nil
	})
}

// passIdle runs when the reader found nothing new for a while. It checks
// that the reader is not stalled: if the partition holds events past what
// this consumer applied on two idle passes in a row, the reader has lost its
// server-side consumer without noticing (as can happen when the NATS node
// holding it dies), and errReaderStalled makes Run read again from the
// checkpoint. With partitions, it also moves an idle partition's
// checkpoints to the stream's end, so that each projection's checkpoint
// (its lowest partition's) says everything up to there is applied. The
// stream's end is read first: an event of the partition stored after it
// also counts as its last, and then nothing moves.
func (c *Consumer) passIdle(ctx context.Context, conn *pgx.Conn) (caughtUp bool, err error) {
	end, err := c.opts.Position.LastSeq(ctx)
	if err != nil {
		return false, err
	}
	last := end // the one partition reads every event
	if c.group.Partitions > 1 {
		if last, err = c.opts.Position.PartitionLastSeq(ctx, c.opts.Partition); err != nil {
			return false, err
		}
	}
	if applied := slices.Min(c.known); last > applied {
		if last == c.undelivered {
			return false, fmt.Errorf("%w: the stream holds events up to %d, applied up to %d", errReaderStalled, last, applied)
		}
		c.undelivered = last
		return false, nil
	}
	c.undelivered = 0
	if c.group.Partitions <= 1 {
		return true, nil
	}
	if c.group.WaitsForKeys() {
		// A policy's checkpoint never passes the key stage's: a rebuild
		// catches its shadow up to the live checkpoint, trusting that.
		keys, err := projections.Checkpoint(ctx, conn, projections.EventKeys.Name)
		if err != nil {
			return false, err
		}
		end = min(end, keys)
	}
	moved := slices.Clone(c.known)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for i, p := range c.group.Stages {
			checkpoint, err := c.lockPartition(ctx, tx, i)
			if err != nil {
				return err
			}
			if last > checkpoint || end <= checkpoint {
				continue
			}
			if err := projections.SetPartition(ctx, tx, p.Name, c.opts.Partition, end); err != nil {
				return err
			}
			moved[i] = end
		}
		return nil
	})
	if err == nil {
		c.known = moved
	}
	return err == nil, err
}

// streamEnd is the Position of a projection in one partition: it reads
// the stream's last sequence, and knows no partitions.
type streamEnd struct{ eventlog.Position }

func (streamEnd) PartitionLastSeq(context.Context, int) (uint64, error) {
	return 0, errors.New("consumers: Options.Position is required with partitions")
}

// errReaderStalled reports a reader that delivers nothing while the
// partition holds events it has not applied.
var errReaderStalled = errors.New("stream reader stalled; reading again from the checkpoint")

// errCheckpointBehind reports a checkpoint below what this consumer
// applied: a rebuild swapped in tables that end earlier. Its reader is past
// events the new tables lack, so it must start again from the checkpoint.
var errCheckpointBehind = errors.New("checkpoint moved back; reading again from it")

// lockPartition locks the partition's checkpoint of stage i for a write,
// failing with errCheckpointBehind when it is below what this consumer
// knows.
func (c *Consumer) lockPartition(ctx context.Context, tx pgx.Tx, i int) (uint64, error) {
	name := c.group.Stages[i].Name
	checkpoint, err := projections.LockPartition(ctx, tx, name, c.opts.Partition)
	if err == nil && checkpoint < c.known[i] {
		err = fmt.Errorf("%w: %s at %d, after %d", errCheckpointBehind, name, checkpoint, c.known[i])
	}
	return checkpoint, err
}

// parallelFrom is the batch size from which a consumer applies its stages
// in parallel, each in a transaction of its own on a session of its own
// (the key stage first, which the others read): a backlog (a catch-up, or
// traffic faster than one session applies) then keeps every core Postgres
// has busy, while the small batches of a consumer that keeps up stay one
// transaction, the cheapest way to apply them.
const parallelFrom = 1000

// batchOutcome is what applying a batch did to each stage.
type batchOutcome struct {
	applied []int
	results []projections.Applied
	failed  []error // nil for a stage that committed the batch
}

func newBatchOutcome(n int) batchOutcome {
	return batchOutcome{applied: make([]int, n), results: make([]projections.Applied, n), failed: make([]error, n)}
}

// applyBatch applies the entries to every stage: each stage takes those
// above its checkpoint, which moves to the last entry in the same
// transaction. A small batch is one transaction for all stages
// (applyTogether), a large one a transaction per stage (applyParallel). The
// error of a stage that failed is a *stageError.
func (c *Consumer) applyBatch(ctx context.Context, conn *pgx.Conn, entries []projections.Entry) error {
	last := entries[len(entries)-1].Message.Seq
	start := time.Now()
	var out batchOutcome
	var err error
	if len(entries) >= parallelFrom && len(c.group.Stages) > 1 {
		out, err = c.applyParallel(ctx, conn, entries)
	} else {
		out, err = c.applyTogether(ctx, conn, entries)
	}
	if err != nil {
		return fmt.Errorf("apply batch ending at seq %d: %w", last, err)
	}
	took := time.Since(start)
	var firstFailure error
	for i, p := range c.group.Stages {
		if out.failed[i] != nil {
			c.failing[i] = true
			if firstFailure == nil && !errors.Is(out.failed[i], errWaitingForKeys) {
				firstFailure = out.failed[i]
			}
			continue
		}
		c.known[i], c.failing[i] = last, false
		c.stalls[i].Store(nil)
		c.opts.Metrics.BatchApplied(p.Name, len(entries), out.applied[i], out.results[i].Duplicates, took)
		c.opts.Metrics.StoredResends(out.results[i].ResendDelays)
		if out.results[i].DeadLetters > 0 {
			c.log.Warn().Str("projection", p.Name).Int("dead_letters", out.results[i].DeadLetters).Uint64("through_seq", last).
				Msg("events set aside as dead letters")
		}
	}
	if firstFailure != nil {
		return fmt.Errorf("apply batch ending at seq %d: %w", last, firstFailure)
	}
	c.log.Debug().Int("events", len(entries)).Uint64("checkpoint", last).Msg("batch applied")
	return nil
}

// applyTogether applies the entries to every stage in one transaction. A
// stage that failed the batch before is applied inside a savepoint: if it
// fails again, the other stages (but those waiting for a failed key stage)
// commit without it, and its outcome says so. A stage failing outside a
// savepoint fails the whole transaction, with a *stageError.
func (c *Consumer) applyTogether(ctx context.Context, conn *pgx.Conn, entries []projections.Entry) (batchOutcome, error) {
	out := newBatchOutcome(len(c.group.Stages))
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		keysFailed := false
		for i, p := range c.group.Stages {
			out.failed[i] = nil
			if keysFailed && p.WaitsForKeys() {
				out.failed[i] = errWaitingForKeys
				continue
			}
			apply := func(tx pgx.Tx) (err error) {
				out.applied[i], out.results[i], err = c.applyStage(ctx, tx, i, entries)
				return err
			}
			if !c.failing[i] {
				if err := apply(tx); err != nil {
					c.failing[i] = true
					return c.stageFailed(i, err)
				}
				continue
			}
			if err := pgx.BeginFunc(ctx, tx, apply); err != nil {
				out.failed[i] = c.stageFailed(i, err)
				keysFailed = keysFailed || p.Keys
			}
		}
		return nil
	})
	return out, err
}

// applyParallel applies the entries to the key stage, if the group has it,
// then to every other stage at once, each in a transaction of its own: the
// first on conn, the others on helper sessions. A stage's rows and its
// checkpoint commit together, so stages may commit apart; the others read
// what the key stage committed.
func (c *Consumer) applyParallel(ctx context.Context, conn *pgx.Conn, entries []projections.Entry) (batchOutcome, error) {
	out := newBatchOutcome(len(c.group.Stages))
	applyOn := func(i int, db *pgx.Conn) {
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
			out.applied[i], out.results[i], err = c.applyStage(ctx, tx, i, entries)
			return err
		})
		if err != nil {
			out.failed[i] = c.stageFailed(i, err)
		}
	}
	first, keysFailed := 0, false
	if c.group.Stages[0].Keys {
		applyOn(0, conn)
		first, keysFailed = 1, out.failed[0] != nil
	}
	var running sync.WaitGroup
	for i := first; i < len(c.group.Stages); i++ {
		if keysFailed && c.group.Stages[i].WaitsForKeys() {
			out.failed[i] = errWaitingForKeys
			continue
		}
		db := conn
		if i > first {
			helper, err := c.helpers.get(ctx, i)
			if err != nil {
				out.failed[i] = c.stageFailed(i, err)
				continue
			}
			db = helper
		}
		running.Go(func() { applyOn(i, db) })
	}
	running.Wait()
	return out, nil
}

// errWaitingForKeys marks the stages left out of a batch because the key
// stage, which they wait for, failed it.
var errWaitingForKeys = errors.New("waiting for the key stage " + projections.EventKeys.Name + ", which failed this batch")

// sessionFault reports whether err is not the statement's fault but the
// session's: no answer from the server, or one that ends or cuts the
// session (an operator's intervention, a connection exception).
func sessionFault(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	return pgerrcode.IsOperatorIntervention(pgErr.Code) || pgerrcode.IsConnectionException(pgErr.Code)
}

// applyStage applies the entries above stage i's checkpoint to it in tx
// and moves the checkpoint to the last entry. It returns how many it
// applied and what applying did.
func (c *Consumer) applyStage(ctx context.Context, tx pgx.Tx, i int, entries []projections.Entry) (int, projections.Applied, error) {
	p := c.group.Stages[i]
	checkpoint, err := c.lockPartition(ctx, tx, i)
	if err != nil {
		return 0, projections.Applied{}, err
	}
	fresh := entries
	for len(fresh) > 0 && fresh[0].Message.Seq <= checkpoint {
		fresh = fresh[1:] // applied before, e.g. by a rebuild swapped in meanwhile
	}
	var result projections.Applied
	if len(fresh) > 0 {
		if result, err = p.ApplyEntries(ctx, tx, p.Name, fresh); err != nil {
			return 0, projections.Applied{}, err
		}
	}
	return len(fresh), result, projections.SetPartition(ctx, tx, p.Name, c.opts.Partition, entries[len(entries)-1].Message.Seq)
}

// decodeEntry decodes a stream message for the projections, keeping the raw
// message for a dead letter should it not decode.
func decodeEntry(seq uint64, subject string, header map[string][]string, body []byte) projections.Entry {
	e := projections.Entry{Message: projections.Message{Seq: seq, Subject: subject, Header: header, Body: body}}
	decode(&e)
	return e
}

// decode fills in what e's message says: its event, or why it has none.
func decode(e *projections.Entry) {
	m := e.Message
	e.Record, e.DecodeErr = eventlog.Decode(m.Seq, m.Subject, m.Header, m.Body)
	e.ReceivedAt, e.ExplicitKey = eventlog.ReceivedAt(m.Header), eventlog.ExplicitKey(m.Header)
}
