package ingest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/projections"
)

// KeyMemory is the durable dedup tier as the handler sees it: what the key
// stage knows of a key after JetStream's duplicate window and within the
// dedup retention, so a re-send then is answered 200 duplicate with the
// original stream_seq instead of being appended again.
type KeyMemory interface {
	// Recall returns the original event stored under key within the
	// retention. ok is false when none is known, and also when the tier
	// cannot answer quickly: the event is then appended, and the key stage
	// finds it a repeat.
	Recall(ctx context.Context, key string) (o projections.Original, ok bool)
}

// DurableOptions configures a DurableTier.
type DurableOptions struct {
	Retention time.Duration // keys stored longer ago are forgotten
	// Window is JetStream's duplicate window: keys stored more recently
	// are left to it, so each tier answers the re-sends it is there for.
	Window   time.Duration
	Timeout  time.Duration    // the most a lookup adds to a request
	MaxBatch int              // keys per query; 0 means 256
	Workers  int              // queries in flight at once; 0 means 2
	Now      func() time.Time // the clock; nil means time.Now
	// FirstAfter, when set, reads when the stream stored its first event
	// after a sequence (eventlog.Position.FirstAfter), and the tier keeps a
	// filter of the keys the key stage recorded (see keyFilter), refreshed
	// every second, to answer lookups of keys it never saw without a query.
	FirstAfter func(ctx context.Context, seq uint64) (time.Time, bool, error)
}

// DurableTier answers the handler's lookups from the key stage's table.
// Lookups of concurrent requests are gathered into one query: a worker
// takes every lookup waiting when it is free, up to MaxBatch, so under load
// one round trip answers many requests and an idle service pays one round
// trip per request, with no added wait. A lookup never holds a request
// longer than Timeout; after a failure the tier answers "unknown" at once
// for a second, so a Postgres outage costs ingest nothing.
type DurableTier struct {
	db       projections.DB
	opts     DurableOptions
	log      zerolog.Logger
	requests chan recall
	// failingUntil is when to try Postgres again after a failure (Unix ns).
	failingUntil atomic.Int64
	failing      atomic.Bool
	queries      atomic.Int64
	filter       *keyFilter // nil without FirstAfter
}

type recall struct {
	key   string
	reply chan recalled // buffered: a worker never waits on a caller gone
}

type recalled struct {
	original projections.Original
	ok       bool
}

// NewDurableTier returns a tier reading db; start its workers with Run.
func NewDurableTier(db projections.DB, opts DurableOptions, log zerolog.Logger) *DurableTier {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	d := &DurableTier{db: db, opts: opts, log: log, requests: make(chan recall, 4*opts.MaxBatch)}
	if opts.FirstAfter != nil {
		d.filter = newKeyFilter(opts.FirstAfter, opts.Now, opts.Window/2)
	}
	return d
}

// Run answers lookups, and refreshes the key filter, until ctx ends.
func (d *DurableTier) Run(ctx context.Context) {
	var running sync.WaitGroup
	if d.filter != nil {
		running.Go(func() { d.refreshFilter(ctx) })
	}
	for range d.opts.Workers {
		running.Go(func() { d.work(ctx) })
	}
	running.Wait()
}

func (d *DurableTier) work(ctx context.Context) {
	for {
		var batch []recall
		select {
		case <-ctx.Done():
			return
		case r := <-d.requests:
			batch = append(batch, r)
		}
	gather:
		for len(batch) < d.opts.MaxBatch {
			select {
			case r := <-d.requests:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		d.answer(ctx, batch)
	}
}

// answer looks batch up in one query.
func (d *DurableTier) answer(ctx context.Context, batch []recall) {
	keys := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if !seen[r.key] {
			seen[r.key] = true
			keys = append(keys, r.key)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	d.queries.Add(1)
	originals, err := projections.Originals(ctx, d.db, projections.EventKeys.Name, keys, d.opts.Now().Add(-d.opts.Retention))
	if err != nil {
		d.failingUntil.Store(time.Now().Add(time.Second).UnixNano())
		if !d.failing.Swap(true) {
			d.log.Warn().Err(err).Msg("durable dedup tier did not answer; appending re-sends for the key stage to find")
		}
	} else if d.failing.Swap(false) {
		d.log.Info().Msg("durable dedup tier answers again")
	}
	for _, r := range batch {
		o, ok := originals[r.key]
		r.reply <- recalled{original: o, ok: ok}
	}
}

// refreshFilter refreshes the key filter every second until ctx ends. A
// failed refresh leaves the filter as it was: its coverage ages, and
// lookups go to Postgres from a quarter of the window after the last
// refresh (see filterHorizon; the filter covers up to half a window ago).
func (d *DurableTier) refreshFilter(ctx context.Context) {
	failed := false
	for {
		err := d.filter.refresh(ctx, d.db)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !failed {
			d.log.Warn().Err(err).Msg("cannot refresh the durable dedup tier's key filter; looking keys up in Postgres")
		}
		failed = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// filterHorizon is how far back the key filter must cover for a lookup to
// trust it: JetStream's window, less a quarter of it for a difference
// between this machine's clock and the NATS server's (which stamps events
// and times the window).
func (d *DurableTier) filterHorizon() time.Time {
	return d.opts.Now().Add(-(d.opts.Window - d.opts.Window/4))
}

// Recall implements KeyMemory.
func (d *DurableTier) Recall(ctx context.Context, key string) (projections.Original, bool) {
	if time.Now().UnixNano() < d.failingUntil.Load() {
		return projections.Original{}, false
	}
	if d.filter != nil && d.filter.absent(key, d.filterHorizon()) {
		return projections.Original{}, false
	}
	r := recall{key: key, reply: make(chan recalled, 1)}
	timer := time.NewTimer(d.opts.Timeout)
	defer timer.Stop()
	select {
	case d.requests <- r:
	case <-timer.C:
		return projections.Original{}, false
	case <-ctx.Done():
		return projections.Original{}, false
	}
	select {
	case got := <-r.reply:
		if got.ok && d.opts.Now().Sub(got.original.StoredAt) < d.opts.Window {
			return projections.Original{}, false
		}
		return got.original, got.ok
	case <-timer.C:
		return projections.Original{}, false
	case <-ctx.Done():
		return projections.Original{}, false
	}
}
