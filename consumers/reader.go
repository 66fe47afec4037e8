package consumers

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/projections"
)

// ReadOptions says what a Reader reads and how much it holds at once.
// Stream is required; zero bounds and waits take the defaults shown.
type ReadOptions struct {
	Stream string // stream name
	// Subjects filter the events read; none reads every event of the
	// stream, which spares the server matching each one against a filter.
	Subjects []string
	// MaxCount and MaxBytes bound a batch: it ends at whichever is reached
	// first (a single message larger than MaxBytes still makes a batch).
	// Defaults 500 and 4 MiB.
	MaxCount int
	MaxBytes int
	// Wait is how long Next waits for the first event of a batch before
	// returning an empty batch, which means the reader is caught up
	// (default 1s).
	Wait time.Duration
	// Linger is how long a batch waits for one more event once it has one
	// and the stream holds no more yet: a lone event goes out after Linger
	// (default 5ms), while a backlog fills whole batches (waiting up to
	// Wait for its next event).
	Linger time.Duration
}

// withDefaults fills the zero bounds and waits of o.
func (o ReadOptions) withDefaults() ReadOptions {
	if o.MaxCount <= 0 {
		o.MaxCount = 500
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 4 << 20
	}
	if o.Wait <= 0 {
		o.Wait = time.Second
	}
	if o.Linger <= 0 {
		o.Linger = 5 * time.Millisecond
	}
	return o
}

// Batch is a run of consecutive events of the filtered stream, decoded.
type Batch struct {
	Entries []projections.Entry
	Bytes   int // message bodies and headers, as received
}

// Reader reads a projection's events in stream order from a given
// sequence. It is the only way taskledger reads the stream: the live
// consumers and the rebuilds both apply what it returns.
//
// Exactly once. A Reader is an ordered consumer started at the sequence
// after the projection's checkpoint: it delivers every message of its
// filter in stream order, each at most once, with no gaps (on a missed
// delivery or heartbeat the library recreates the server-side consumer
// after the last message handed out). The caller applies each batch in one
// Postgres transaction that also moves the checkpoint to the batch's last
// sequence and skips messages at or below the checkpoint it locked. On any
// error, of the reader or of applying, the caller closes the reader,
// discards whatever it had read, and opens a new one at checkpoint+1 as
// committed. So every event is applied by exactly one committed
// transaction: none can be skipped (a batch only commits if every earlier
// event committed before it), none applied twice (the checkpoint only
// moves forward, in the same transaction as the rows). No acknowledgement
// carries state: the checkpoint in Postgres is the only position.
//
// Reading overlaps applying: one batch is assembled and decoded while the
// caller writes the previous one, and the library prefetches about a batch
// (by bytes, see readAhead) behind that.
type Reader struct {
	iter    jetstream.MessagesContext
	batches chan Batch
	errs    chan error
	stop    context.CancelFunc
	done    chan struct{}
}

// OpenReader starts reading the stream at startSeq (1 for all of it).
func OpenReader(ctx context.Context, js jetstream.JetStream, opts ReadOptions, startSeq uint64) (*Reader, error) {
	if opts.Stream == "" {
		return nil, errors.New("consumers: ReadOptions.Stream is required")
	}
	opts = opts.withDefaults()
	cons, err := js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: opts.Subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(startSeq, 1),
		// Surface a lasting outage to the caller, whose backoff watches
		// its context, rather than retry inside the library forever.
		MaxResetAttempts: 5,
	})
	if err != nil {
		return nil, fmt.Errorf("read stream %s from seq %d: %w", opts.Stream, startSeq, err)
	}
	// Each pull asks for up to readAhead bytes, and the next pull goes out
	// only once the last one's events are all taken: so the library holds
	// at most one pull's bytes. (The default threshold, half the count,
	// would let pulls of a few large events follow each other until
	// hundreds of them wait.)
	ahead := readAhead(opts, js.Conn().MaxPayload())
	iter, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(readAheadCount(ahead), ahead),
		jetstream.PullThresholdMessages(1))
	if err != nil {
		return nil, fmt.Errorf("read stream %s from seq %d: %w", opts.Stream, startSeq, err)
	}
	pumpCtx, stop := context.WithCancel(context.Background())
	r := &Reader{iter: iter, batches: make(chan Batch, 1), errs: make(chan error, 1), stop: stop, done: make(chan struct{})}
	go r.pump(pumpCtx, opts)
	return r, nil
}

// readAhead is how many bytes one pull may bring a reader: a batch's worth,
// and at least twice the largest message the server delivers, so that a
// pull always has room for one.
func readAhead(opts ReadOptions, maxPayload int64) int {
	const delivery = 4 << 10 // a delivered message's subject and reply
	return max(opts.MaxBytes, 2*(int(maxPayload)+delivery))
}

// readAheadCount is how many events one pull may bring a reader, and the
// slots of the library's channel for them: more than bytes of the smallest
// stored event fit in, so the bytes always end a pull first and the
// channel never fills. A full channel would drop what arrives next, the
// server's heartbeats and status messages included, as a slow consumer.
// (Bounded by bytes alone, the library keeps a channel of a million slots,
// 8 MB per reader.)
func readAheadCount(bytes int) int {
	const smallestEvent = 128 // a stored event's headers alone are larger
	return bytes/smallestEvent + 1
}

// Next returns the next batch, or an empty one when no event came within
// ReadOptions.Wait. After an error the reader is finished: close it and
// open another from the checkpoint.
func (r *Reader) Next(ctx context.Context) (Batch, error) {
	select {
	case b := <-r.batches:
		return b, nil
	case err := <-r.errs:
		return Batch{}, err
	case <-ctx.Done():
		return Batch{}, ctx.Err()
	}
}

// Close stops reading and discards what was read ahead.
func (r *Reader) Close() {
	r.stop()
	r.iter.Stop()
	<-r.done
}

// pump assembles batches ahead of the caller until stopped or failing.
func (r *Reader) pump(ctx context.Context, opts ReadOptions) {
	defer close(r.done)
	size := 0
	for ctx.Err() == nil {
		b, err := r.read(opts, size)
		if err != nil {
			if ctx.Err() == nil {
				r.errs <- fmt.Errorf("read stream %s: %w", opts.Stream, err)
			}
			return
		}
		size = len(b.Entries)
		select {
		case r.batches <- b:
		case <-ctx.Done():
			return
		}
	}
}

// read waits up to Wait for an event, then takes more until the batch is
// full or none comes within Linger (within Wait while the stream holds
// more of the filter's events than delivered), and decodes them. It makes
// room for size events at once, as many as the last batch held, rather
// than copying large entries as the batch grows.
func (r *Reader) read(opts ReadOptions, size int) (Batch, error) {
	b := Batch{Entries: make([]projections.Entry, 0, size)}
	wait := opts.Wait
	for len(b.Entries) < opts.MaxCount && b.Bytes < opts.MaxBytes {
		m, err := r.iter.Next(jetstream.NextMaxWait(wait))
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			return Batch{}, err
		}
		meta, err := m.Metadata()
		if err != nil {
			return Batch{}, err
		}
		b.Entries = append(b.Entries, projections.Entry{Message: projections.Message{
			Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Body: m.Data(), Stored: meta.Timestamp}})
		b.Bytes += len(m.Data()) + headerBytes(m.Headers())
		wait = max(opts.Linger, time.Millisecond)
		if meta.NumPending > 0 {
			// More are stored already: a backlog fills whole batches even
			// when its next events are a pull away.
			wait = opts.Wait
		}
	}
	decodeAll(b.Entries)
	return b, nil
}

// decodeAll decodes entries, a large batch's parts at once on every
// processor: decoding is most of the reader's work, and the reader paces a
// backlog.
func decodeAll(entries []projections.Entry) {
	const part = 512 // below this, a goroutine costs more than it saves
	parts := min(runtime.GOMAXPROCS(0), (len(entries)+part-1)/part)
	if parts <= 1 {
		for i := range entries {
			decode(&entries[i])
		}
		return
	}
	var decoding sync.WaitGroup
	for p := range parts {
		share := entries[p*len(entries)/parts : (p+1)*len(entries)/parts]
		decoding.Go(func() {
			for i := range share {
				decode(&share[i])
			}
		})
	}
	decoding.Wait()
}

func headerBytes(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
