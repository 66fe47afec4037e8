package ingest

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/projections"
)

// keyFilter lets the durable tier answer most lookups without Postgres: it
// holds a Bloom filter of the dedup keys the key stage recorded for the
// events the stream stored before a time (covered), loaded as they age
// past half of JetStream's duplicate window. The tier's query can only find
// a key the key stage recorded, whose original is older than the window;
// so while covered is within the window, a key the filter has never seen
// cannot be found by the query, and the lookup is answered "unknown"
// without it (a re-send of such an event is JetStream's to answer). That
// includes the most frequent re-sends, those of events stored moments ago:
// their keys are recorded but not loaded yet. Otherwise, or for a key the
// filter may hold, the lookup queries as before. A false positive costs a
// query; there are no false negatives, since keys are only ever added (a
// key the key stage forgets stays in the filter, and costs a query).
//
// Keys are loaded by their events' stored time, and also by sequence those
// the key stage recorded since the last load for events stamped before
// what was loaded (the stream's timestamps can step back, after a leader
// change to a server whose clock is behind): every recorded key is loaded.
// covered assumes the timestamps grow with the sequence, as JetStream's
// window does; where they step back, it is wrong only until the key stage
// has applied the event stamped earlier.
type keyFilter struct {
	// firstAfter reads when the stream stored its first event after a
	// sequence (eventlog.Position.FirstAfter).
	firstAfter func(ctx context.Context, seq uint64) (time.Time, bool, error)
	now        func() time.Time // the clock
	// recent is how long after it was stored a key is loaded.
	recent time.Duration

	mu      sync.RWMutex
	bloom   *bloom
	covered time.Time // every event whose key bloom lacks was stored at or after this

	// Used by the refreshing goroutine only.
	loadedUntil time.Time // the keys of the events stored before this are in bloom,
	loadedSeq   uint64    // as recorded through this sequence of the key stage
	checkpoint  uint64    // the key stage's checkpoint at the last refresh
	table       uint32    // the oid of the key stage's table loaded from; a rebuild swaps in another
}

// keysTable is the key stage's table of keys.
var keysTable = pgx.Identifier{projections.EventKeys.Name, "keys"}.Sanitize()

// filterCapacity is how many keys a new filter is sized for; when the key
// stage holds more it is loaded anew at twice the size.
const filterCapacity = 1 << 20

func newKeyFilter(firstAfter func(context.Context, uint64) (time.Time, bool, error), now func() time.Time,
	recent time.Duration) *keyFilter {
	return &keyFilter{firstAfter: firstAfter, now: now, recent: recent, bloom: newBloom(filterCapacity)}
}

// absent reports whether the key stage's table holds no key of an event
// stored before since under key, as far as the filter knows: every event
// whose key it has not loaded was stored at or after since, and it never
// saw key.
func (f *keyFilter) absent(key string, since time.Time) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.covered.IsZero() && !f.covered.Before(since) && !f.bloom.mayContain(key)
}

// refresh loads the keys of the events stored since the last refresh and
// more than f.recent ago, as far as the key stage has recorded them.
func (f *keyFilter) refresh(ctx context.Context, db projections.DB) error {
	until := f.now().Add(-f.recent)
	table, err := keysTableOID(ctx, db)
	if err != nil {
		return err
	}
	checkpoint, err := projections.Checkpoint(ctx, db, projections.EventKeys.Name)
	if err != nil {
		return err
	}
	// The key stage has recorded the key of every event stored before the
	// first one it has not applied, and none of those after.
	unapplied, ok, err := f.firstAfter(ctx, checkpoint)
	if err != nil {
		return err
	}
	if ok && unapplied.Before(until) {
		until = unapplied
	}
	f.mu.RLock()
	b := f.bloom
	f.mu.RUnlock()
	live := true
	switch {
	case table != f.table || checkpoint < f.checkpoint:
		// A rebuild swapped in another table (whose keys of events loaded
		// already may differ: another stream, another retention), or the
		// key stage moved back: what the filter holds may miss keys now
		// recorded. Answer nothing until a new one is loaded.
		f.mu.Lock()
		f.covered = time.Time{}
		f.mu.Unlock()
		b, live, f.loadedUntil, f.loadedSeq, f.table = newBloom(filterCapacity), false, time.Time{}, 0, table
	case b.count > b.capacity:
		// Full: load a new one at twice the size, while this one goes on
		// answering for what it holds.
		b, live, f.loadedUntil, f.loadedSeq = newBloom(2*b.count), false, time.Time{}, 0
	}
	f.checkpoint = checkpoint
	loadUntil := f.loadedUntil
	if until.After(loadUntil) {
		loadUntil = until
	}
	if err := f.load(ctx, db, b, live, loadUntil, checkpoint); err != nil {
		return err
	}
	// A rebuild that swapped the table in while this loaded would leave the
	// filter without the keys of the new one: the next refresh starts anew.
	if after, err := keysTableOID(ctx, db); err != nil || after != table {
		return err
	}
	f.loadedUntil, f.loadedSeq = loadUntil, checkpoint
	// Every event stored before until has its key loaded now, and no later
	// one may have: until is at most the first event the key stage has not
	// applied.
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bloom, f.covered = b, until
	return nil
}

// keysTableOID identifies the key stage's table now: a rebuild swaps in
// another under the same name.
func keysTableOID(ctx context.Context, db projections.DB) (uint32, error) {
	var oid uint32
	if err := db.QueryRow(ctx, "SELECT $1::regclass::oid", keysTable).Scan(&oid); err != nil {
		return 0, fmt.Errorf("find the key stage's table: %w", err)
	}
	return oid, nil
}

// load adds to b the keys of the events stored from f.loadedUntil to
// until, and those recorded after f.loadedSeq through checkpoint for events
// stamped before f.loadedUntil (an event stamped earlier than one before
// it, as after a leader change to a server whose clock is behind), under
// the lock when b answers lookups.
func (f *keyFilter) load(ctx context.Context, db projections.DB, b *bloom, live bool, until time.Time, checkpoint uint64) error {
	rows, err := db.Query(ctx, "SELECT dedup_key FROM "+keysTable+" WHERE stored_at >= $1 AND stored_at < $2"+
		" UNION ALL SELECT dedup_key FROM "+keysTable+" WHERE stream_seq > $3 AND stream_seq <= $4 AND stored_at < $1",
		f.loadedUntil, until, int64(f.loadedSeq), int64(checkpoint))
	if err != nil {
		return fmt.Errorf("load dedup keys: %w", err)
	}
	defer rows.Close()
	var key string
	for rows.Next() {
		if err := rows.Scan(&key); err != nil {
			return fmt.Errorf("load dedup keys: %w", err)
		}
		if live {
			f.mu.Lock()
		}
		b.add(key)
		if live {
			f.mu.Unlock()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load dedup keys: %w", err)
	}
	return nil
}

// bloom is a Bloom filter of strings, about 1 % false positives at
// capacity.
type bloom struct {
	bits     []uint64
	seed     maphash.Seed
	count    int // keys added
	capacity int
}

const bloomHashes = 7 // with 10 bits a key: about 1 % false positives

func newBloom(capacity int) *bloom {
	return &bloom{bits: make([]uint64, (capacity*10+63)/64), seed: maphash.MakeSeed(), capacity: capacity}
}

// positions calls fn with the bit of each of key's hashes (double hashing
// from one 64-bit hash).
func (b *bloom) positions(key string, fn func(bit uint64)) {
	h := maphash.String(b.seed, key)
	h1, h2 := h&0xffffffff, h>>32|1
	m := uint64(len(b.bits)) * 64
	for i := range uint64(bloomHashes) {
		fn((h1 + i*h2) % m)
	}
}

func (b *bloom) add(key string) {
	b.count++
	b.positions(key, func(bit uint64) { b.bits[bit/64] |= 1 << (bit % 64) })
}

func (b *bloom) mayContain(key string) bool {
	all := true
	b.positions(key, func(bit uint64) { all = all && b.bits[bit/64]&(1<<(bit%64)) != 0 })
	return all
}
