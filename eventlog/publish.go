package eventlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable wraps every failure to get an append acknowledged: the
// server is down, reconnecting, slow, or the stream refused the write. The
// event may or may not be stored; a retry with the same key is safe.
var ErrUnavailable = errors.New("event stream unavailable")

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
}

// NewAppender appends to the stream described by cfg.
func NewAppender(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, cfg StreamConfig) *Appender {
	return &Appender{nc: nc, js: js, stream: stream, cfg: cfg}
}

// Append publishes r with Nats-Msg-Id set to its dedup key and returns once
// JetStream has acknowledged it, so a nil error means the event is stored.
func (a *Appender) Append(ctx context.Context, r Record) (Appended, error) {
	if !a.nc.IsConnected() {
		return Appended{}, fmt.Errorf("%w: not connected to NATS (%s)", ErrUnavailable, a.nc.Status())
	}
	ack, err := a.js.PublishMsg(ctx, r.Message(a.cfg.Subject(r.Source)),
		jetstream.WithExpectStream(a.cfg.Name))
	if err != nil {
		return Appended{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return Appended{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// BodyDigest returns the stored body digest of the event at seq, to tell a
// retry from a reused key.
func (a *Appender) BodyDigest(ctx context.Context, seq uint64) (string, error) {
	m, err := a.stream.GetMsg(ctx, seq)
	if err != nil {
		return "", fmt.Errorf("%w: read event %d: %w", ErrUnavailable, seq, err)
	}
	return m.Header.Get(HeaderBodyDigest), nil
}
