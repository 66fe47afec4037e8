// Package consumers feeds the event stream into the projections: one durable
// JetStream pull consumer per projection, batches applied in one Postgres
// transaction each, acknowledged only after commit.
//
// Ordering is what makes the checkpoint safe. Messages at or below a
// projection's checkpoint are skipped, so a message must never be applied
// after a later one has moved the checkpoint past it. The consumer therefore
// handles one batch at a time and, on any error or any gap in delivery,
// throws away what it fetched and recreates the durable consumer at
// checkpoint+1: redeliveries never overtake.
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
	"github.com/taskledger/taskledger/projections"
)

// Advisory lock classes: the first key of pg_try_advisory_lock(int, int),
// the second being hashtext(projection name).
const (
	LockClassConsumer = 7_301 // held by the one active consumer of a projection
	LockClassRebuild  = 7_302 // held by the one running rebuild of a projection
)

// Options configures a Consumer.
type Options struct {
	Stream        string        // stream name
	FilterSubject string        // e.g. taskledger.events.>
	BatchSize     int           // messages per fetch and transaction
	FetchWait     time.Duration // how long a fetch waits for messages
	StandbyPoll   time.Duration // how often a standby tries for the lock
	// DedupRetention is how long seen dedup keys are kept; swept while
	// active. Zero keeps them forever.
	DedupRetention time.Duration
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
	cfg := c.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = SessionName(c.proj.Name)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := c.waitForLock(ctx, conn); err != nil {
		return err
	}
	c.active.Store(true)
	defer c.active.Store(false)

	checkpoint, err := projections.Checkpoint(ctx, conn, c.proj.Name)
	if err != nil {
		return err
	}
	cons, err := c.resetConsumer(ctx, checkpoint+1)
	if err != nil {
		return err
	}
	out.recovered(c.log)
	c.log.Info().Uint64("checkpoint", checkpoint).Msg("consumer active")

	var lastDelivery uint64 // consumer sequence of the last message received
	nextSweep := time.Now()
	for ctx.Err() == nil {
		if c.opts.DedupRetention > 0 && time.Now().After(nextSweep) {
			if err := projections.SweepSeenKeys(ctx, conn, c.proj.Name, c.opts.DedupRetention); err != nil {
				return err
			}
			nextSweep = time.Now().Add(time.Hour)
		}
		msgs, err := fetch(cons, c.opts.BatchSize, c.opts.FetchWait, &lastDelivery)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			continue
		}
		// Finish the batch even when shutdown starts: commit, then ack.
		if err := c.applyBatch(context.WithoutCancel(ctx), conn, msgs); err != nil {
			return err
		}
		out.recovered(c.log)
	}
	return nil
}

func (c *Consumer) waitForLock(ctx context.Context, conn *pgx.Conn) error {
	announced := false
	for {
		var locked bool
		err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext($2))", LockClassConsumer, c.proj.Name).Scan(&locked)
		if err != nil {
			return fmt.Errorf("take consumer lock: %w", err)
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

// resetConsumer recreates the projection's durable consumer to deliver from
// startSeq, discarding whatever the previous one had in flight.
func (c *Consumer) resetConsumer(ctx context.Context, startSeq uint64) (jetstream.Consumer, error) {
	durable := "taskledger_" + c.proj.Name
	if err := c.js.DeleteConsumer(ctx, c.opts.Stream, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("reset consumer %s: %w", durable, err)
	}
	cons, err := c.js.CreateConsumer(ctx, c.opts.Stream, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "taskledger projection " + c.proj.Name,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   startSeq,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 4 * c.opts.BatchSize,
		FilterSubject: c.opts.FilterSubject,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s at seq %d: %w", durable, startSeq, err)
	}
	return cons, nil
}

// errDeliveryGap reports a delivery that never arrived; applying past it
// would skip it for good.
var errDeliveryGap = errors.New("gap in consumer deliveries")

// fetch waits up to wait for a message, then takes whatever else is
// already there, up to n in all: a lone event is applied at once, and a
// backlog in full batches. It fails on a fetch error or a gap in the
// consumer sequence.
func fetch(cons jetstream.Consumer, n int, wait time.Duration, lastDelivery *uint64) ([]jetstream.Msg, error) {
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	msgs, err := collect(first, lastDelivery, nil)
	if err != nil || len(msgs) == 0 || n == 1 {
		return msgs, err
	}
	rest, err := cons.FetchNoWait(n - 1)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return collect(rest, lastDelivery, msgs)
}

// collect appends batch's messages to msgs, checking that deliveries follow
// each other without a gap.
func collect(batch jetstream.MessageBatch, lastDelivery *uint64, msgs []jetstream.Msg) ([]jetstream.Msg, error) {
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if meta.Sequence.Consumer != *lastDelivery+1 {
			return nil, fmt.Errorf("%w: delivery %d after %d", errDeliveryGap, meta.Sequence.Consumer, *lastDelivery)
		}
		*lastDelivery = meta.Sequence.Consumer
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return msgs, nil
}

// applyBatch applies msgs above the checkpoint in one transaction that also
// moves the checkpoint to the last of them, then acknowledges them all.
func (c *Consumer) applyBatch(ctx context.Context, conn *pgx.Conn, msgs []jetstream.Msg) error {
	last, err := msgs[len(msgs)-1].Metadata()
	if err != nil {
		return err
	}
	var applied, dead int
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		checkpoint, err := projections.LockCheckpoint(ctx, tx, c.proj.Name)
		if err != nil {
			return err
		}
		entries := make([]projections.Entry, 0, len(msgs))
		for _, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			if meta.Sequence.Stream <= checkpoint {
				continue // applied before; its ack was lost
			}
			entries = append(entries, Entry(meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data()))
		}
		applied = len(entries)
		if dead, err = c.proj.ApplyEntries(ctx, tx, c.proj.Name, entries); err != nil {
			return err
		}
		return projections.SetCheckpoint(ctx, tx, c.proj.Name, last.Sequence.Stream)
	})
	if err != nil {
		return fmt.Errorf("apply batch ending at seq %d: %w", last.Sequence.Stream, err)
	}
	if dead > 0 {
		c.log.Warn().Int("dead_letters", dead).Uint64("through_seq", last.Sequence.Stream).
			Msg("events set aside as dead letters")
	}
	c.log.Debug().Int("applied", applied).Uint64("checkpoint", last.Sequence.Stream).Msg("batch applied")
	// AckAll: acknowledging the last acknowledges the batch. A lost ack
	// only means a redelivery that the checkpoint skips.
	if err := msgs[len(msgs)-1].Ack(); err != nil {
		c.log.Debug().Err(err).Msg("ack failed; the batch will be redelivered and skipped")
	}
	return nil
}

// Entry decodes a stream message for the projections, keeping the raw
// message for a dead letter should it not decode.
func Entry(seq uint64, subject string, header map[string][]string, body []byte) projections.Entry {
	rec, err := eventlog.Decode(seq, subject, header, body)
	return projections.Entry{
		Message:   projections.Message{Seq: seq, Subject: subject, Header: header, Body: body},
		Record:    rec,
		DecodeErr: err,
	}
}
