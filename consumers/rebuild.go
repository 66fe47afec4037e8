package consumers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/projections"
)

// keysPatience is how long a rebuild waits for a key stage that does not
// move before it fails, and a live consumer before it shows as stalled.
const keysPatience = 30 * time.Second

// Rebuilder replays the stream from sequence 1 into a projection's shadow
// schema while the live one keeps serving and the live consumer keeps it
// current, then swaps the shadow in.
type Rebuilder struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	opts ReadOptions
	log  zerolog.Logger
}

// NewRebuilder returns a Rebuilder reading the stream through js; its
// batches (one shadow transaction each) are usually larger than the live
// ones, and an empty read after opts.Wait means caught up.
func NewRebuilder(pool *pgxpool.Pool, js jetstream.JetStream, opts ReadOptions, log zerolog.Logger) *Rebuilder {
	return &Rebuilder{pool: pool, js: js, opts: opts.withDefaults(), log: log}
}

// Progress is how far a rebuild has got: Applied of Target stream sequences.
type Progress struct {
	Projection string
	Applied    uint64
	Target     uint64
	Started    time.Time
	Done       bool
}

// Rebuild is a started rebuild. It holds the projection's rebuild lock on
// its own session until Run returns.
type Rebuild struct {
	rb      *Rebuilder
	proj    projections.Projection
	conn    *pgx.Conn
	stream  jetstream.Stream
	started time.Time
	applied uint64 // last stream sequence applied to the shadow
	// deferredIndexes are the statements that keep of the appended rows
	// what the shadow's unique indexes would have kept and build its
	// indexes, once the replay has caught up (see DropShadowIndexes).
	deferredIndexes []string
	// adopting ignores the live checkpoint, which counts in another
	// stream: see StartAdopting.
	adopting bool
	// helpers are the sessions that apply shares of a batch beside conn
	// (see replayShares).
	helpers helperSessions
}

// rebuildShares is how many sessions replay a policy's or the timeline's
// batch at once, each the events of its share of the tasks.
const rebuildShares = 3

// Start takes the projection's rebuild lock and prepares an empty shadow
// schema, dropping whatever an interrupted rebuild left. It returns
// projections.ErrRebuildRunning when another rebuild of the projection
// holds the lock, and a *projections.StreamMismatchError when the database
// follows another stream; neither is recorded as the rebuild's outcome. A
// failure to prepare the shadow is recorded as a failed rebuild.
func (rb *Rebuilder) Start(ctx context.Context, proj projections.Projection) (*Rebuild, error) {
	return rb.start(ctx, proj, false)
}

// StartAdopting is Start for a database that follows another stream than
// the one rb reads: the rebuilt projection replaces the live one whatever
// its checkpoint. Only for adopting a stream (taskledger replay
// --adopt-stream), with no live consumer running.
func (rb *Rebuilder) StartAdopting(ctx context.Context, proj projections.Projection) (*Rebuild, error) {
	return rb.start(ctx, proj, true)
}

func (rb *Rebuilder) start(ctx context.Context, proj projections.Projection, adopting bool) (_ *Rebuild, err error) {
	stream, err := rb.js.Stream(ctx, rb.opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", rb.opts.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", rb.opts.Stream, err)
	}
	conn, err := connectProjectionSession(ctx, rb.pool, "taskledger-rebuild-"+proj.Name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := projections.LockRebuild(ctx, conn, proj.Name); err != nil {
		return nil, err
	}
	if !adopting {
		err := projections.VerifyStream(ctx, conn, func(ctx context.Context) (projections.StreamIdentity, uint64, error) {
			// Read again: the checkpoints have moved on while events flow.
			fresh, err := stream.Info(ctx)
			if err != nil {
				return projections.StreamIdentity{}, 0, fmt.Errorf("read stream %s: %w", rb.opts.Stream, err)
			}
			info = fresh
			return StreamIdentity(info), info.State.LastSeq, nil
		})
		if err != nil {
			return nil, err
		}
	}
	// The shadow is split as the stream's events now are, which is how a
	// rebuild changes the partition count.
	err = proj.PrepareShadow(ctx, conn, info.State.LastSeq, proj.PartitionsOf(eventlog.StoredPartitions(info.Config)))
	var deferred []string
	if err == nil {
		deferred, err = proj.DropShadowIndexes(ctx, conn)
	}
	if err != nil {
		// Holding the lock, this is the latest rebuild: record its failure.
		if rerr := proj.RecordStartFailure(context.WithoutCancel(ctx), conn, info.State.LastSeq, err); rerr != nil {
			rb.log.Warn().Err(rerr).Str("projection", proj.Name).Msg("could not record the rebuild's failure")
		}
		return nil, fmt.Errorf("prepare the rebuild of %s: %w", proj.Name, err)
	}
	helpers := newHelperSessions(rb.pool, rebuildShares, func(i int) string { return fmt.Sprintf("taskledger-rebuild-%s/%d", proj.Name, i) })
	return &Rebuild{rb: rb, proj: proj, conn: conn, stream: stream, started: time.Now(), deferredIndexes: deferred,
		adopting: adopting, helpers: helpers}, nil
}

// Run replays the stream into the shadow schema, reporting progress after
// every batch, and swaps it in once caught up. It releases the lock when it
// returns. If it fails or ctx ends first, the live tables are untouched,
// the failure is recorded for GET /v1/projections, and the next rebuild
// starts clean.
func (b *Rebuild) Run(ctx context.Context, report func(Progress)) (err error) {
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if err != nil {
			if rerr := b.proj.RecordFailure(ctx, b.conn, err); rerr != nil {
				b.rb.log.Warn().Err(rerr).Str("projection", b.proj.Name).Msg("could not record the rebuild's failure")
			}
		}
		// Unlock explicitly: a closed connection's backend, and with it the
		// lock, may outlive Close for a moment.
		_ = projections.UnlockRebuild(ctx, b.conn, b.proj.Name)
		b.conn.Close(ctx)
		b.helpers.close(ctx)
	}()
	opts := b.rb.opts
	reader, err := OpenReader(ctx, b.rb.js, opts, 1)
	if err != nil {
		return err
	}
	defer reader.Close()
	for empties := 0; ; {
		batch, err := reader.Next(ctx)
		if err != nil {
			return err
		}
		entries := batch.Entries
		target, err := b.targetSeq(ctx)
		if err != nil {
			return err
		}
		if len(entries) > 0 && b.proj.WaitsForKeys() {
			if err := waitForKeys(ctx, b.conn, entries[len(entries)-1].Message.Seq, keysPatience); err != nil {
				return err
			}
		}
		if len(entries) > 0 {
			empties = 0
			err := b.replayShares(ctx, entries)
			if err == nil {
				err = pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
					if err := b.setShadowCheckpoint(ctx, tx, entries); err != nil {
						return err
					}
					return b.proj.RecordProgress(ctx, tx, b.applied, max(target, b.applied))
				})
			}
			if err != nil {
				return fmt.Errorf("rebuild %s into %s: %w", b.proj.Name, b.proj.ShadowSchema(), err)
			}
			report(Progress{Projection: b.proj.Name, Applied: b.applied, Target: max(target, b.applied), Started: b.started})
		} else {
			empties++
		}
		// The swap holds the live side still while it applies what is left,
		// so it starts only when that is at most about a batch: when the
		// stream's end is within a batch (under sustained ingest batches
		// never run short, but the end stays within reach as long as replay
		// outpaces ingest), or when reads keep coming back empty (the
		// filter matches nothing further) and the live checkpoint is within
		// a batch. A read that is only slow, or a stream end that is far,
		// goes on outside the swap.
		nearEnd := target <= b.applied+uint64(opts.MaxCount)
		if !nearEnd && empties >= 3 {
			live, err := b.proj.LiveCheckpoint(ctx, b.conn)
			if err != nil {
				return err
			}
			if live > b.applied+uint64(opts.MaxCount) {
				continue
			}
			target = 0 // past the live checkpoint, the filter has nothing more
		} else if !nearEnd {
			continue
		}
		if err := b.proj.FinishShadow(ctx, b.conn, b.deferredIndexes); err != nil {
			return err
		}
		if err := b.swap(ctx, reader, target); err != nil {
			return err
		}
		report(Progress{Projection: b.proj.Name, Applied: b.applied, Target: max(target, b.applied), Started: b.started, Done: true})
		return nil
	}
}

// swap catches the shadow up to the live checkpoint and to target (the
// stream's end when the replay was within a batch of it), and swaps it in,
// all in one transaction that holds the live checkpoint lock, so the live
// consumer pauses for its duration and no event is applied twice or missed.
func (b *Rebuild) swap(ctx context.Context, reader *Reader, target uint64) error {
	if b.proj.WaitsForKeys() {
		// Events the key stage has not applied wait for the live consumer,
		// after the swap. Read here, not inside the swap: waiting for the
		// key stage while holding the live checkpoint could wait on the
		// key stage's own swap. The live checkpoint never passes the key
		// stage, so catching up to it stays safe.
		keys, err := projections.Checkpoint(ctx, b.conn, projections.EventKeys.Name)
		if err != nil {
			return err
		}
		target = min(target, keys)
	}
	err := pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
		live, err := b.proj.LockLive(ctx, tx)
		if err != nil {
			return err
		}
		if b.adopting {
			live = 0 // a position in the stream the database followed before
		}
		// The live side may have applied events read after our last look;
		// an empty batch or two is the reader catching up. Past the live
		// checkpoint, an empty batch means the stream's end.
		for empty := 0; b.applied < max(live, target); {
			batch, err := reader.Next(ctx)
			if err != nil {
				return err
			}
			entries := batch.Entries
			if len(entries) == 0 {
				if b.applied >= live {
					break
				}
				if empty++; empty == 3 {
					return fmt.Errorf("the stream ends at %d, before the live checkpoint %d", b.applied, live)
				}
				continue
			}
			bound := max(live, target)
			upTo := entries[:sort.Search(len(entries), func(i int) bool { return entries[i].Message.Seq > bound })]
			if len(upTo) > 0 {
				if err := b.applyShadow(ctx, tx, upTo); err != nil {
					return err
				}
			}
			if len(upTo) < len(entries) {
				break
			}
		}
		return b.proj.SwapShadow(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("swap in rebuilt %s: %w", b.proj.Name, err)
	}
	b.rb.log.Info().Str("projection", b.proj.Name).Uint64("checkpoint", b.applied).
		Dur("took_ms", time.Since(b.started)).Msg("rebuild swapped in")
	return nil
}

func (b *Rebuild) applyShadow(ctx context.Context, tx pgx.Tx, entries []projections.Entry) error {
	if _, err := b.proj.ApplyEntries(ctx, tx, b.proj.ShadowSchema(), entries); err != nil {
		return err
	}
	return b.setShadowCheckpoint(ctx, tx, entries)
}

// setShadowCheckpoint moves the shadow's checkpoint to the last of
// entries, applied.
func (b *Rebuild) setShadowCheckpoint(ctx context.Context, tx pgx.Tx, entries []projections.Entry) error {
	last := entries[len(entries)-1].Message.Seq
	if err := projections.SetCheckpoint(ctx, tx, b.proj.ShadowSchema(), last); err != nil {
		return err
	}
	b.applied = last
	return nil
}

// replayShares applies entries to the shadow before the swap, appended
// (see projections.ReplayEntries) until FinishShadow. A policy's
// or the timeline's are split by task into rebuildShares shares, each
// applied in a transaction of its own on a session of its own, at once: a
// task's events stay in order in one share, and the read models keep
// nothing across tasks. The shadow serves nothing until the swap, and an
// interrupted rebuild starts over with a fresh one, so shares committed
// apart do no harm; the checkpoint moves only once every share committed.
// The key stage decides across tasks (a key may come back on another
// task), so it is applied in one transaction.
func (b *Rebuild) replayShares(ctx context.Context, entries []projections.Entry) error {
	if b.proj.Keys {
		return pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
			_, err := b.proj.ApplyEntries(ctx, tx, b.proj.ShadowSchema(), entries)
			return err
		})
	}
	shares := make([][]projections.Entry, rebuildShares)
	for _, e := range entries {
		share := 0 // an event that does not decode belongs to no task
		if e.DecodeErr == nil {
			share = domain.Partition(e.Record.TaskID, rebuildShares)
		}
		shares[share] = append(shares[share], e)
	}
	sessions := []*pgx.Conn{b.conn}
	for i := 1; i < rebuildShares; i++ { // all of them before any share starts on b.conn
		conn, err := b.helpers.get(ctx, i)
		if err != nil {
			return err
		}
		sessions = append(sessions, conn)
	}
	var running sync.WaitGroup
	errs := make([]error, rebuildShares)
	for i, share := range shares {
		if len(share) == 0 {
			continue
		}
		db := sessions[i]
		running.Go(func() {
			errs[i] = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				_, err := b.proj.ReplayEntries(ctx, tx, b.proj.ShadowSchema(), share)
				return err
			})
		})
	}
	running.Wait()
	return errors.Join(errs...)
}

func (b *Rebuild) targetSeq(ctx context.Context) (uint64, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream position: %w", err)
	}
	return info.State.LastSeq, nil
}
