// Package consumers feeds the event stream into the projections: a Reader
// per projection from its checkpoint, each batch applied in one Postgres
// transaction that also moves the checkpoint. Reader states why that
// applies every event exactly once.
package consumers

import (
	"context"
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
	ReadOptions               // what to read, batch bounds (one transaction each)
	StandbyPoll time.Duration // how often a standby tries for the lock (default 1s)
	// DedupRetention is how long seen dedup keys are kept; swept while
	// active. Zero keeps them forever.
	DedupRetention time.Duration
	// Metrics records batches and restarts; nil records nothing.
	Metrics *metrics.Metrics
	// DrainTimeout bounds how long the batch under way may take to commit
	// once Run's context ends; zero means 30s.
	DrainTimeout time.Duration
}

// Consumer keeps one projection up to date. Run one in every replica: the
// one holding the projection's advisory lock works, the others stand by.
type Consumer struct {
	proj   projections.Projection
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	opts   Options
	log    zerolog.Logger
	active atomic.Bool
}

// New returns a consumer of proj.
func New(proj projections.Projection, pool *pgxpool.Pool, js jetstream.JetStream, opts Options, log zerolog.Logger) *Consumer {
	opts.ReadOptions = opts.ReadOptions.withDefaults()
	if opts.StandbyPoll <= 0 {
		opts.StandbyPoll = time.Second
	}
	return &Consumer{proj: proj, pool: pool, js: js, opts: opts,
		log: log.With().Str("projection", proj.Name).Logger()}
}

// SessionName is the application_name of a projection's consumer session,
// to find it in pg_stat_activity.
func SessionName(projection string) string { return "taskledger-consumer-" + projection }

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
		out.failed(c.log, err)
		c.opts.Metrics.ConsumerRestarted(c.proj.Name)
		select {
		case <-ctx.Done():
		case <-time.After(out.backoff()):
		}
	}
}

// runActive waits for the lock on a dedicated session, then applies batches
// on that same session until an error: if the session dies, so does the
// lock, and so does the work done under it.
func (c *Consumer) runActive(ctx context.Context, out *outage) error {
	conn, err := connectProjectionSession(ctx, c.pool, SessionName(c.proj.Name))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := c.waitForLock(ctx, conn); err != nil {
		return err
	}
	guard, err := guardStream(ctx, c.js, c.opts.Stream, conn)
	if err != nil {
		return err
	}
	c.active.Store(true)
	defer c.active.Store(false)

	checkpoint, err := projections.Checkpoint(ctx, conn, c.proj.Name)
	if err != nil {
		return err
	}
	reader, err := OpenReader(ctx, c.js, c.opts.ReadOptions, checkpoint+1)
	if err != nil {
		return err
	}
	defer reader.Close()
	out.recovered(c.log)
	c.log.Info().Uint64("checkpoint", checkpoint).Msg("consumer active")

	nextSweep := time.Now()
	for ctx.Err() == nil {
		if c.opts.DedupRetention > 0 && !c.proj.IsTimeline() && time.Now().After(nextSweep) {
			if err := projections.SweepSeenKeys(ctx, conn, c.proj.Name, c.opts.DedupRetention); err != nil {
				return err
			}
			nextSweep = time.Now().Add(time.Hour)
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
			continue
		}
		// Finish the batch even when shutdown starts, within DrainTimeout.
		batchCtx, cancel := drainContext(ctx, c.opts.DrainTimeout)
		err = c.applyBatch(batchCtx, conn, batch.Entries)
		cancel()
		if err != nil {
			return err
		}
		out.recovered(c.log)
	}
	return nil
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
func connectProjectionSession(ctx context.Context, pool *pgxpool.Pool, name string) (*pgx.Conn, error) {
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = name
	cfg.RuntimeParams["synchronous_commit"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres: %w", err)
	}
	return conn, nil
}

func (c *Consumer) waitForLock(ctx context.Context, conn *pgx.Conn) error {
	announced := false
	for {
		locked, err := projections.TryLockConsumer(ctx, conn, c.proj.Name)
		if err != nil {
			return err
		}
		if locked {
			return nil
		}
		if !announced {
			c.log.Info().Msg("another replica is applying this projection; standing by")
			announced = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.opts.StandbyPoll):
		}
	}
}

// applyBatch applies the entries above the checkpoint in one transaction
// that also moves the checkpoint to the last of them.
func (c *Consumer) applyBatch(ctx context.Context, conn *pgx.Conn, entries []projections.Entry) error {
	last := entries[len(entries)-1].Message.Seq
	start := time.Now()
	var applied int
	var result projections.Applied
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		checkpoint, err := projections.LockCheckpoint(ctx, tx, c.proj.Name)
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
		return projections.SetCheckpoint(ctx, tx, c.proj.Name, last)
	})
	if err != nil {
		return fmt.Errorf("apply batch ending at seq %d: %w", last, err)
	}
	c.opts.Metrics.BatchApplied(c.proj.Name, len(entries), applied, result.Duplicates, time.Since(start))
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
		Message:    projections.Message{Seq: seq, Subject: subject, Header: header, Body: body},
		Record:     rec,
		DecodeErr:  err,
		ReceivedAt: eventlog.ReceivedAt(header),
	}
}
