package ingest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// A Bloom filter never forgets a key it was given, and at capacity mistakes
// about 1 % of others for given ones.
func TestBloomHasNoFalseNegatives(t *testing.T) {
	t.Parallel()
	const n = 100_000
	b := newBloom(n)
	for i := range n {
		b.add(fmt.Sprintf("tallyfy:id:%d", i))
	}
	falsePositives := 0
	for i := range n {
		if !b.mayContain(fmt.Sprintf("tallyfy:id:%d", i)) {
			t.Fatalf("key %d added and not found", i)
		}
		if b.mayContain(fmt.Sprintf("tallyfy:derived:%d", i)) {
			falsePositives++
		}
	}
	if rate := float64(falsePositives) / n; rate > 0.03 {
		t.Errorf("%.2f %% false positives at capacity, want about 1 %%", 100*rate)
	}
}

// keyFilterBundle is a migrated database whose key stage records keys as
// a stand-in stream (the times it stored each sequence) grows.
type keyFilterBundle struct {
	tier   *DurableTier
	db     projections.DB
	mu     sync.Mutex
	stored []time.Time // by sequence - 1
}

// newKeyFilterBundle returns a bundle whose tier reads now (nil for
// time.Now) as its clock.
func newKeyFilterBundle(t *testing.T, window time.Duration, now func() time.Time) *keyFilterBundle {
	t.Helper()
	b := &keyFilterBundle{db: testenv.NewMigratedPool(t)}
	b.tier = NewDurableTier(b.db, DurableOptions{Retention: 24 * time.Hour, Window: window, Timeout: time.Minute,
		FirstAfter: b.firstAfter, Now: now}, zerolog.Nop())
	return b
}

// startLookups runs the tier's query workers until the test ends.
func (b *keyFilterBundle) startLookups(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	for range b.tier.opts.Workers {
		go b.tier.work(ctx)
	}
}

// manualClock is a clock the test moves.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (b *keyFilterBundle) firstAfter(_ context.Context, seq uint64) (time.Time, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq >= uint64(len(b.stored)) {
		return time.Time{}, false, nil
	}
	return b.stored[seq], true, nil
}

// store stores an event under key at the stream's next sequence, stamped
// at, and when applied records its key and moves the key stage's
// checkpoint there.
func (b *keyFilterBundle) store(t *testing.T, key string, at time.Time, applied bool) {
	t.Helper()
	b.mu.Lock()
	b.stored = append(b.stored, at)
	seq := len(b.stored)
	b.mu.Unlock()
	if applied {
		b.apply(t, key, seq)
	}
}

// apply records key as the key stage does for the event stored at seq, and
// moves its checkpoint there.
func (b *keyFilterBundle) apply(t *testing.T, key string, seq int) {
	t.Helper()
	b.mu.Lock()
	at := b.stored[seq-1]
	b.mu.Unlock()
	ctx := context.Background()
	if _, err := b.db.Exec(ctx, `INSERT INTO event_keys.keys VALUES ($1, $2, 'digest', $3)`, key, int64(seq), at); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Exec(ctx, `UPDATE event_keys.checkpoint SET last_seq = $1`, int64(seq)); err != nil {
		t.Fatal(err)
	}
}

func (b *keyFilterBundle) refresh(t *testing.T) {
	t.Helper()
	if err := b.tier.filter.refresh(context.Background(), b.db); err != nil {
		t.Fatal(err)
	}
}

// recall looks key up and reports whether Postgres was asked.
func (b *keyFilterBundle) recall(t *testing.T, key string) (found, queried bool) {
	t.Helper()
	before := b.tier.queries.Load()
	_, found = b.tier.Recall(context.Background(), key)
	return found, b.tier.queries.Load() != before
}

// While every event whose key the filter has not loaded is newer than the
// window, a key never recorded is answered without a query, and so is the
// key of an event stored moments ago (JetStream's window answers its
// re-sends); a key recorded for an older event is still found in Postgres.
// While the key stage lags behind an event older than the window, every
// lookup queries.
func TestKeyFilterSkipsQueriesOnlyWhileItCoversTheWindow(t *testing.T) {
	t.Parallel()
	b := newKeyFilterBundle(t, time.Minute, nil)
	b.startLookups(t)
	ctx := context.Background()
	now := time.Now()
	b.store(t, "s:old", now.Add(-time.Hour), true)
	b.store(t, "s:lagging", now.Add(-10*time.Minute), false) // the key stage has not applied it yet
	if _, queried := b.recall(t, "s:before"); !queried {
		t.Error("a lookup before the filter's first refresh skipped Postgres")
	}
	b.refresh(t)
	if _, queried := b.recall(t, "s:other"); !queried {
		t.Error("with the key stage behind an event older than the window, a lookup skipped Postgres")
	}
	if found, queried := b.recall(t, "s:old"); !found || !queried {
		t.Errorf("a key recorded before the lag: found %v, queried %v; want found in Postgres", found, queried)
	}

	b.apply(t, "s:lagging", 2) // the key stage catches up
	b.refresh(t)
	if found, queried := b.recall(t, "s:new"); found || queried {
		t.Errorf("a key never recorded: found %v, queried %v; want neither", found, queried)
	}
	if found, queried := b.recall(t, "s:lagging"); !found || !queried {
		t.Errorf("a key recorded once the key stage caught up: found %v, queried %v; want found in Postgres", found, queried)
	}

	b.store(t, "s:moment", time.Now(), true) // recorded, and within the window
	b.store(t, "s:recent", time.Now(), false)
	b.refresh(t)
	if found, queried := b.recall(t, "s:moment"); found || queried {
		t.Errorf("the key of an event stored moments ago: found %v, queried %v; want neither", found, queried)
	}
	if _, queried := b.recall(t, "s:other"); queried {
		t.Error("with only an event within the window not applied, a lookup queried")
	}

	// A rebuild swaps in another table holding keys at sequences the filter
	// has loaded already (another stream adopted, a longer retention).
	for _, sql := range []string{
		`ALTER TABLE event_keys.keys RENAME TO keys_before`,
		`CREATE TABLE event_keys.keys (LIKE event_keys.keys_before INCLUDING ALL)`,
		`INSERT INTO event_keys.keys VALUES ('s:adopted', 1, 'digest', now() - interval '1 hour')`,
	} {
		if _, err := b.db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	b.refresh(t)
	if found, _ := b.recall(t, "s:adopted"); !found {
		t.Error("a key of the swapped-in table, at a sequence loaded before, was not found")
	}
}

// The key of an event stored moments ago is loaded once it is half a
// window old, and found in Postgres once it is older than the window.
func TestKeyFilterLoadsAKeyAsItAges(t *testing.T) {
	t.Parallel()
	clock := &manualClock{now: time.Now()}
	b := newKeyFilterBundle(t, time.Minute, clock.Now)
	b.startLookups(t)
	b.store(t, "s:moment", clock.Now(), true)
	b.refresh(t)
	if found, queried := b.recall(t, "s:moment"); found || queried {
		t.Errorf("moments after: found %v, queried %v; want neither", found, queried)
	}
	clock.advance(40 * time.Second)
	b.refresh(t)
	if found, queried := b.recall(t, "s:moment"); found || !queried {
		t.Errorf("past half the window: found %v, queried %v; want queried and left to JetStream", found, queried)
	}
	clock.advance(30 * time.Second)
	b.refresh(t)
	if found, queried := b.recall(t, "s:moment"); !found || !queried {
		t.Errorf("past the window: found %v, queried %v; want found in Postgres", found, queried)
	}
}

// An event stamped earlier than the one before it (a leader change to a
// server whose clock is behind), applied after the filter loaded past its
// stamp, still has its key loaded.
func TestKeyFilterLoadsAKeyStampedBeforeWhatItLoaded(t *testing.T) {
	t.Parallel()
	clock := &manualClock{now: time.Now()}
	b := newKeyFilterBundle(t, time.Minute, clock.Now)
	b.startLookups(t)
	now := clock.Now()
	b.store(t, "s:first", now.Add(-2*time.Minute), true)
	b.store(t, "s:later", now.Add(-50*time.Second), false)
	b.store(t, "s:stamped-earlier", now.Add(-55*time.Second), false)
	b.refresh(t) // loads through the first unapplied event, 50 s ago
	b.apply(t, "s:later", 2)
	b.apply(t, "s:stamped-earlier", 3)
	clock.advance(30 * time.Second)
	b.refresh(t)
	if found, queried := b.recall(t, "s:stamped-earlier"); !found || !queried {
		t.Errorf("a key stamped 85 s ago, before what was loaded: found %v, queried %v; want found in Postgres", found, queried)
	}
}

// A filter holding more keys than it was sized for is loaded anew at twice
// the size, while the full one goes on answering, and the new one holds
// every recorded key.
func TestKeyFilterFullIsLoadedAnewAtTwiceTheSize(t *testing.T) {
	t.Parallel()
	b := newKeyFilterBundle(t, time.Minute, nil)
	f := b.tier.filter
	b.refresh(t) // the first refresh starts a filter of the table
	f.bloom = newBloom(2)
	keys := []string{"s:1", "s:2", "s:3", "s:4", "s:5"}
	for _, k := range keys {
		b.store(t, k, time.Now().Add(-time.Hour), true)
	}
	b.refresh(t)
	full := f.bloom
	if full.capacity != 2 || full.count != len(keys) {
		t.Fatalf("after loading %d keys: capacity %d, count %d; want the small filter over-filled", len(keys), full.capacity, full.count)
	}
	b.refresh(t)
	if f.bloom == full || f.bloom.capacity != 2*len(keys) || f.bloom.count != len(keys) {
		t.Fatalf("after the next refresh: capacity %d, count %d; want a new filter of %d holding %d",
			f.bloom.capacity, f.bloom.count, 2*len(keys), len(keys))
	}
	for _, k := range keys {
		if !f.bloom.mayContain(k) {
			t.Errorf("%s missing from the filter loaded anew", k)
		}
	}
	if f.absent("s:1", time.Now().Add(-45*time.Second)) {
		t.Error("a recorded key is answered absent")
	}
}
