package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/domain"
)

// ErrUnavailable wraps every failure to get an append acknowledged: the
// server is down, reconnecting, slow, or the stream refused the write. The
// event may or may not be stored; a retry with the same key is safe.
var ErrUnavailable = errors.New("event stream unavailable")

// ErrTooLarge is returned, before anything is sent, for a record whose
// body and headers together exceed the largest message the server takes
// (its max_payload): it can never be stored.
var ErrTooLarge = errors.New("event larger than the stream takes")

// Appended is JetStream's answer to an append.
type Appended struct {
	Seq       uint64 // the event's stream sequence (the original one for a duplicate)
	Duplicate bool   // the key was already stored inside the duplicate window
}

// Appender appends records to the event stream.
type Appender struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    StreamConfig
	sync   *GroupSync
}

// AppendOption configures an Appender.
type AppendOption func(*Appender)

// WithGroupSync makes Append return only once the acknowledged event is on
// disk, through g (the embedded server's stream). Without it, an
// acknowledgement is as durable as the server makes it.
func WithGroupSync(g *GroupSync) AppendOption {
	return func(a *Appender) { a.sync = g }
}

// NewAppender appends to the stream described by cfg.
func NewAppender(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, cfg StreamConfig, opts ...AppendOption) *Appender {
	a := &Appender{nc: nc, js: js, stream: stream, cfg: cfg}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Append publishes r with Nats-Msg-Id set to its dedup key and returns once
// JetStream has acknowledged it, so a nil error means the event is stored.
// When a concurrent publish of the same key is still being replicated, it
// waits for that one and answers its sequence as a duplicate. Errors wrap
// ErrTooLarge (permanent) or ErrUnavailable (retry).
func (a *Appender) Append(ctx context.Context, r Record) (Appended, error) {
	msg := r.Message(a.cfg.Subject(r.Source, r.TaskID))
	// Set here rather than by jetstream.WithExpectStream, so that the size
	// measured below is that of the message exactly as it is sent.
	msg.Header.Set(jetstream.ExpectedStreamHeader, a.cfg.Name)
	// The server refuses header plus body over max_payload; the stream
	// (MaxMsgSize unset) and its 64 KiB header limit allow anything below.
	if size, limit := int64(msg.Size()-len(msg.Subject)-len(msg.Reply)), a.nc.MaxPayload(); limit > 0 && size > limit {
		return Appended{}, fmt.Errorf("%w: body and stored headers are %d bytes, the server's max_payload is %d",
			ErrTooLarge, size, limit)
	}
	if !a.nc.IsConnected() {
		return Appended{}, fmt.Errorf("%w: not connected to NATS (%s)", ErrUnavailable, a.nc.Status())
	}
	for {
		ack, err := a.js.PublishMsg(ctx, msg)
		if err == nil {
			// A duplicate waits too: its original may be acknowledged and
			// not yet on disk.
			if a.sync != nil {
				if err := a.sync.Sync(ctx); err != nil {
					return Appended{}, fmt.Errorf("%w: put the event on disk: %w", ErrUnavailable, err)
				}
			}
			return Appended{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
		}
		if !inProcess(err) {
			return Appended{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		// Another publish of the same key is being stored by the replicated
		// stream. Publishing again once it is done answers Duplicate with
		// its sequence (or stores the event, had that publish failed).
		select {
		case <-ctx.Done():
			return Appended{}, fmt.Errorf("%w: %w (waiting for a concurrent publish of %s)", ErrUnavailable, ctx.Err(), r.Key.Value)
		case <-time.After(inProcessRetry):
		}
	}
}

// errCodeDuplicateInProcess is JetStream's JSStreamDuplicateMessageConflict,
// "duplicate message id is in process" (409): on a replicated stream, a
// publish whose Nats-Msg-Id another publish is proposing right now.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// inProcessRetry is the pause before publishing again after
// errCodeDuplicateInProcess: about one replication round trip.
const inProcessRetry = 5 * time.Millisecond

func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeDuplicateInProcess
}

// Original is what ingest needs of a stored event to answer its re-send.
type Original struct {
	BodyDigest string    // tells a retry from a reused key
	StoredAt   time.Time // when the stream stored it
}

// Original reads the stored event at seq.
func (a *Appender) Original(ctx context.Context, seq uint64) (Original, error) {
	m, err := a.stream.GetMsg(ctx, seq)
	if err != nil {
		return Original{}, fmt.Errorf("%w: read event %d: %w", ErrUnavailable, seq, err)
	}
	return Original{BodyDigest: domain.BodyDigest(m.Data), StoredAt: m.Time}, nil
}
