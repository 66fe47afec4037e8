// Package consumers feeds the event stream into the projections: a Reader
// per projection from its checkpoint, each batch applied in one Postgres
// transaction that also moves the checkpoint. Reader states why that
// applies every event exactly once.
package consumers

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
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
	// Partition of Partitions is the part of the projection this consumer
	// applies; Partitions 0 or 1 means the whole projection.
	Partition, Partitions int
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

// Consumer keeps one partition of a projection up to date. Run one per
// partition in every replica: the one holding the partition's advisory lock
// works, the others stand by.
type Consumer struct {
	proj   projections.Projection
	worker string
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	opts   Options
	log    zerolog.Logger
	active atomic.Bool
	// known is the checkpoint as this consumer last read or wrote it; its
	// reader has delivered everything up to it. Used by Run's goroutine only.
	known uint64
	// undelivered is the partition's last sequence as an idle pass found
	// it beyond known, or 0: found again on the next idle pass, the reader
	// has stalled. Used by Run's goroutine only.
	undelivered uint64
	// stall is why the consumer cannot apply, or nil while it can.
	stall atomic.Pointer[Stall]
}

// Stall is why a consumer cannot apply: the error of its last attempt, or
// the key stage it waits for, since when and after how many attempts.
type Stall struct {
	Reason   string
	Since    time.Time
	Attempts int
}

// stallAfter is how many failures in a row make a consumer stalled: one
// failure is a hiccup, retried at once.
const stallAfter = 3

// Stalled returns why the consumer cannot apply, or nil when it applies
// (or stands by for another replica). A consumer is stalled after
// stallAfter failures in a row, or while the key stage it waits for has not
// moved for keysPatience; it is no longer once it applies a batch, finds
// nothing to apply, or stands by.
func (c *Consumer) Stalled() *Stall { return c.stall.Load() }

// New returns a consumer of proj.
func New(proj projections.Projection, pool *pgxpool.Pool, js jetstream.JetStream, opts Options, log zerolog.Logger) *Consumer {
	opts.ReadOptions = opts.ReadOptions.withDefaults()
	if opts.StandbyPoll <= 0 {
		opts.StandbyPoll = time.Second
	}
	proj.KeyRetention = opts.DedupRetention
	opts.Partitions = max(opts.Partitions, 1)
	if opts.Position == nil {
		opts.Position = streamEnd{eventlog.NewPosition(js, eventlog.StreamConfig{Name: opts.Stream})}
	}
	worker := projections.Worker(proj.Name, opts.Partition, opts.Partitions)
	l := log.With().Str("projection", proj.Name)
	if opts.Partitions > 1 {
		l = l.Int("partition", opts.Partition)
	}
	return &Consumer{proj: proj, worker: worker, pool: pool, js: js, opts: opts, log: l.Logger()}
}

// SessionName is the application_name of a worker's consumer session, to
// find it in pg_stat_activity (and, by its pid, its lock in pg_locks).
func SessionName(worker string) string { return "taskledger-consumer-" + worker }

// Projection is the name of the projection this consumer applies.
func (c *Consumer) Projection() string { return c.proj.Name }

// Partition is the partition this consumer applies.
func (c *Consumer) Partition() int { return c.opts.Partition }

// Partitions is how many partitions the projection is split into.
func (c *Consumer) Partitions() int { return c.opts.Partitions }

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
				c.stall.Store(&Stall{Reason: err.Error(), Since: out.since, Attempts: out.attempts})
			}
			c.opts.Metrics.ConsumerRestarted(c.proj.Name)
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
	if err := c.waitForLock(ctx, conn, out); err != nil {
		return err
	}
	handedOver := false
	defer func() {
		c.active.Store(false)
		if c.opts.Share != nil && !handedOver {
			c.opts.Share.release(c.proj.Name)
		}
	}()
	guard, err := guardStream(ctx, c.js, c.opts.Stream, conn)
	if err != nil {
		return err
	}
	c.active.Store(true)

	checkpoint, err := c.checkpoint(ctx, conn)
	if err != nil {
		return err
	}
	c.known = checkpoint
	reader, err := OpenReader(ctx, c.js, c.opts.ReadOptions, checkpoint+1)
	if err != nil {
		return err
	}
	defer reader.Close()
	c.log.Info().Uint64("checkpoint", checkpoint).Msg("consumer active")

	for ctx.Err() == nil {
		if c.opts.Share != nil && c.opts.Share.handOver(c.proj.Name, c.opts.Partitions) {
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
		if c.proj.WaitsForKeys() {
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

// recovered ends an outage and a stall: the consumer applies again.
func (c *Consumer) recovered(out *outage) {
	out.recovered(c.log)
	c.stall.Store(nil)
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
		c.stall.Store(stall)
		err = waitForKeys(ctx, conn, keys+1, 0) // until it moves again
		c.stall.CompareAndSwap(stall, nil)
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

func (c *Consumer) tryLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	if c.opts.Share != nil && !c.opts.Share.take(c.proj.Name, c.opts.Partitions) {
		return false, nil
	}
	locked, err := projections.TryLockConsumer(ctx, conn, c.worker)
	if !locked && c.opts.Share != nil {
		c.opts.Share.release(c.proj.Name)
	}
	return locked, err
}

// checkpoint reads the partition's checkpoint.
func (c *Consumer) checkpoint(ctx context.Context, conn *pgx.Conn) (uint64, error) {
	var seq uint64
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) (err error) {
		seq, err = projections.LockPartition(ctx, tx, c.proj.Name, c.opts.Partition)
		return err
	})
	return seq, err
}

// passIdle runs when the reader found nothing new for a while. It checks
// that the reader is not stalled: if the partition holds events past what
// this consumer applied on two idle passes in a row, the reader has lost its
// server-side consumer without noticing (as can happen when the NATS node
// holding it dies), and errReaderStalled makes Run read again from the
// checkpoint. With partitions, it also moves an idle partition's checkpoint
// to the stream's end, so that the projection's checkpoint (its lowest
// partition's) says everything up to there is applied. The stream's end is
// read first: an event of the partition stored after it also counts as its
// last, and then nothing moves.
func (c *Consumer) passIdle(ctx context.Context, conn *pgx.Conn) (caughtUp bool, err error) {
	end, err := c.opts.Position.LastSeq(ctx)
	if err != nil {
		return false, err
	}
	last := end // the one partition reads every event
	if c.opts.Partitions > 1 {
		if last, err = c.opts.Position.PartitionLastSeq(ctx, c.opts.Partition); err != nil {
			return false, err
		}
	}
	if last > c.known {
		if last == c.undelivered {
			return false, fmt.Errorf("%w: the stream holds events up to %d, applied up to %d", errReaderStalled, last, c.known)
		}
		c.undelivered = last
		return false, nil
	}
	c.undelivered = 0
	if c.opts.Partitions <= 1 {
		return true, nil
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		checkpoint, err := c.lockPartition(ctx, tx)
		if err != nil || last > checkpoint || end <= checkpoint {
			return err
		}
		return projections.SetPartition(ctx, tx, c.proj.Name, c.opts.Partition, end)
	})
	if err == nil {
		c.known = max(c.known, end)
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

// lockPartition locks the partition's checkpoint for a write, failing with
// errCheckpointBehind when it is below what this consumer knows.
func (c *Consumer) lockPartition(ctx context.Context, tx pgx.Tx) (uint64, error) {
	checkpoint, err := projections.LockPartition(ctx, tx, c.proj.Name, c.opts.Partition)
	if err == nil && checkpoint < c.known {
		err = fmt.Errorf("%w: %d, after %d", errCheckpointBehind, checkpoint, c.known)
	}
	return checkpoint, err
}

// applyBatch applies the entries above the checkpoint in one transaction
// that also moves the checkpoint to the last of them.
func (c *Consumer) applyBatch(ctx context.Context, conn *pgx.Conn, entries []projections.Entry) error {
	last := entries[len(entries)-1].Message.Seq
	start := time.Now()
	var applied int
	var result projections.Applied
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		checkpoint, err := c.lockPartition(ctx, tx)
		if err != nil {
			return err
		}
		fresh := entries
		for len(fresh) > 0 && fresh[0].Message.Seq <= checkpoint {
			fresh = fresh[1:] // applied before, e.g. by a rebuild swapped in meanwhile
		}
		applied = len(fresh)
		if result, err = c.proj.ApplyEntries(ctx, tx, c.proj.Name, fresh); err != nil {
			return err
		}
		return projections.SetPartition(ctx, tx, c.proj.Name, c.opts.Partition, last)
	})
	if err != nil {
		return fmt.Errorf("apply batch ending at seq %d: %w", last, err)
	}
	c.known = last
	c.opts.Metrics.BatchApplied(c.proj.Name, len(entries), applied, result.Duplicates, time.Since(start))
	c.opts.Metrics.StoredResends(result.ResendDelays)
	if result.DeadLetters > 0 {
		c.log.Warn().Int("dead_letters", result.DeadLetters).Uint64("through_seq", last).
			Msg("events set aside as dead letters")
	}
	c.log.Debug().Int("applied", applied).Uint64("checkpoint", last).Msg("batch applied")
	return nil
}

// decodeEntry decodes a stream message for the projections, keeping the raw
// message for a dead letter should it not decode.
func decodeEntry(seq uint64, subject string, header map[string][]string, body []byte) projections.Entry {
	rec, err := eventlog.Decode(seq, subject, header, body)
	return projections.Entry{
		Message:     projections.Message{Seq: seq, Subject: subject, Header: header, Body: body},
		Record:      rec,
		DecodeErr:   err,
		ReceivedAt:  eventlog.ReceivedAt(header),
		ExplicitKey: eventlog.ExplicitKey(header),
	}
}
