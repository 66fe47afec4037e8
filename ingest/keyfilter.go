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
// holds a Bloom filter of the dedup keys the key stage has recorded through
// a stream sequence (loaded), and when the stream stored its first event
// after that one (covered). The tier's query can only find a key the key
// stage recorded, whose original is older than JetStream's duplicate
// window. Every event after loaded was stored at or after covered; so while
// covered is within the window, a key the filter has never seen cannot be
// found by the query, and the lookup is answered "unknown" without it (a
// re-send of such an event is JetStream's to answer). Otherwise, or for a
// key the filter may hold, the lookup queries as before. A false positive
// costs a query; there are no false negatives, since keys are only ever
// added (a key the key stage forgets stays in the filter, and costs a
// query).
type keyFilter struct {
	// firstAfter reads when the stream stored its first event after a
	// sequence (eventlog.Position.FirstAfter).
	firstAfter func(ctx context.Context, seq uint64) (time.Time, bool, error)

	mu      sync.RWMutex
	bloom   *bloom
	covered time.Time // every event whose key bloom lacks was stored at or after this

	// Used by the refreshing goroutine only.
	pending *bloom // a filter being loaded anew, answering once loaded
	loaded  uint64 // the keys recorded through this stream sequence are in bloom (or pending)
	table   uint32 // the oid of the key stage's table loaded from; a rebuild swaps in another
}

// keysTable is the key stage's table of keys.
var keysTable = pgx.Identifier{projections.EventKeys.Name, "keys"}.Sanitize()

// filterCapacity is how many keys a new filter is sized for; when the key
// stage holds more it is loaded anew at twice the size.
const filterCapacity = 1 << 20

func newKeyFilter(firstAfter func(context.Context, uint64) (time.Time, bool, error)) *keyFilter {
	return &keyFilter{firstAfter: firstAfter, bloom: newBloom(filterCapacity)}
}

// absent reports whether the key stage's table holds no key of an event
// stored before since under key, as far as the filter knows: every event it
// has not loaded was stored at or after since, and it never saw key.
func (f *keyFilter) absent(key string, since time.Time) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.covered.IsZero() && !f.covered.Before(since) && !f.bloom.mayContain(key)
}

// refresh loads the keys the key stage recorded since the last refresh and
// notes when the stream stored the first event after them.
func (f *keyFilter) refresh(ctx context.Context, db projections.DB) error {
	var table uint32
	if err := db.QueryRow(ctx, "SELECT $1::regclass::oid", keysTable).Scan(&table); err != nil {
		return fmt.Errorf("find the key stage's table: %w", err)
	}
	checkpoint, err := projections.Checkpoint(ctx, db, projections.EventKeys.Name)
	if err != nil {
		return err
	}
	f.mu.RLock()
	live := f.bloom
	f.mu.RUnlock()
	b := live
	if f.pending != nil {
		b = f.pending
	}
	switch {
	case table != f.table || checkpoint < f.loaded:
		// A rebuild swapped in another table (whose keys up to loaded may
		// differ: another stream, another retention), or the key stage
		// moved back: what the filter holds may miss keys now recorded.
		// Answer nothing until a new one is loaded.
		f.mu.Lock()
		f.covered = time.Time{}
		f.mu.Unlock()
		b, f.loaded, f.table = newBloom(filterCapacity), 0, table
	case b.count > b.capacity:
		// Full: load a new one at twice the size, while this one goes on
		// answering for what it holds.
		b, f.loaded = newBloom(2*b.count), 0
	}
	if err := f.load(ctx, db, b, b == live, checkpoint); err != nil {
		return err
	}
	f.loaded = max(f.loaded, checkpoint)
	looked := time.Now()
	covered, ok, err := f.firstAfter(ctx, f.loaded)
	if err != nil {
		if b != live {
			f.pending = b
		}
		return err
	}
	if !ok {
		covered = looked // nothing after loaded yet: what comes is newer
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bloom, f.covered, f.pending = b, covered, nil
	return nil
}

// load adds to b the keys recorded after f.loaded through checkpoint,
// under the lock when b answers lookups.
func (f *keyFilter) load(ctx context.Context, db projections.DB, b *bloom, live bool, checkpoint uint64) error {
	rows, err := db.Query(ctx, "SELECT dedup_key FROM "+keysTable+" WHERE stream_seq > $1 AND stream_seq <= $2",
		int64(f.loaded), int64(checkpoint))
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
