package eventlog

import (
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/domain"
)

// Headers stored on every event message, besides Nats-Msg-Id.
const (
	HeaderSource     = "Taskledger-Source"
	HeaderKeyOrigin  = "Taskledger-Key-Origin"
	HeaderReceivedAt = "Taskledger-Received-At"
	// HeaderSignatureScheme and HeaderSignatureSecret record how the
	// delivery was verified: the scheme, and the index of the source's
	// secret that matched (absent when unsigned).
	HeaderSignatureScheme = "Taskledger-Signature-Scheme"
	HeaderSignatureSecret = "Taskledger-Signature-Secret"
	// HeaderRequestPrefix prefixes the forwarded request headers.
	HeaderRequestPrefix = "Taskledger-Request-"
)

// Record is one webhook event ready to append.
type Record struct {
	Source     string
	TaskID     string // chooses the partition
	Key        domain.DedupKey
	Body       []byte
	ReceivedAt time.Time
	// RequestHeaders are the delivery's headers worth keeping (content type,
	// user agent, webhook ids); stored under HeaderRequestPrefix.
	RequestHeaders map[string]string
	// Signature is how the delivery was verified; the zero value records
	// nothing (events appended by tools rather than ingest).
	Signature domain.Signature
}

// NewRecord makes the record of body from source as ingest would for a
// delivery without key headers: validated, with its event_id or derived
// dedup key.
func NewRecord(source string, body []byte, receivedAt time.Time) (Record, error) {
	ev, err := domain.ParseEvent(source, body)
	if err != nil {
		return Record{}, err
	}
	key, err := domain.DeriveDedupKey(ev, domain.KeyHeaders{})
	if err != nil {
		return Record{}, err
	}
	return Record{Source: source, TaskID: ev.TaskID, Key: key, Body: body, ReceivedAt: receivedAt}, nil
}

// Message is the NATS message that stores r on subject.
func (r Record) Message(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = r.Body
	m.Header.Set(nats.MsgIdHdr, r.Key.Value)
	m.Header.Set(HeaderSource, r.Source)
	m.Header.Set(HeaderKeyOrigin, string(r.Key.Origin))
	m.Header.Set(HeaderReceivedAt, r.ReceivedAt.UTC().Format(time.RFC3339Nano))
	if r.Signature.Scheme != "" {
		m.Header.Set(HeaderSignatureScheme, r.Signature.Scheme)
		if r.Signature.Secret >= 0 {
			m.Header.Set(HeaderSignatureSecret, strconv.Itoa(r.Signature.Secret))
		}
	}
	for name, value := range r.RequestHeaders {
		m.Header.Set(HeaderRequestPrefix+textproto.CanonicalMIMEHeaderKey(name), value)
	}
	return m
}

// ReceivedAt is when ingest received the event stored with header, from its
// HeaderReceivedAt; zero when it is missing or malformed.
func ReceivedAt(header nats.Header) time.Time {
	at, err := time.Parse(time.RFC3339Nano, header.Get(HeaderReceivedAt))
	if err != nil {
		return time.Time{}
	}
	return at.UTC()
}

// ErrUndecodable wraps every reason a stream message is not a valid event.
var ErrUndecodable = errors.New("undecodable event")

// Decode turns a stream message back into an event. The source comes from
// the Taskledger-Source header or else the subject's last token; the dedup
// key from Nats-Msg-Id or else is derived, so events appended by other
// tools are understood too. Errors wrap ErrUndecodable.
func Decode(seq uint64, subject string, header nats.Header, data []byte) (domain.Recorded, error) {
	source := header.Get(HeaderSource)
	if source == "" {
		source = subject[strings.LastIndexByte(subject, '.')+1:]
	}
	ev, err := domain.ParseEvent(source, data)
	if err != nil {
		return domain.Recorded{}, fmt.Errorf("%w: seq %d: %w", ErrUndecodable, seq, err)
	}
	key := header.Get(nats.MsgIdHdr)
	if key == "" {
		k, err := domain.DeriveDedupKey(ev, domain.KeyHeaders{})
		if err != nil {
			return domain.Recorded{}, fmt.Errorf("%w: seq %d: %w", ErrUndecodable, seq, err)
		}
		key = k.Value
	}
	return domain.Recorded{Seq: seq, DedupKey: key, Event: ev}, nil
}

// ExplicitKey reports whether the dedup key of a stored message was chosen
// by its sender (any layer but the derived one), so that the same key with
// another body is a reused key rather than a duplicate. Messages appended
// by other tools count by their Nats-Msg-Id.
func ExplicitKey(header nats.Header) bool {
	if origin := header.Get(HeaderKeyOrigin); origin != "" {
		return origin != string(domain.OriginDerived)
	}
	return header.Get(nats.MsgIdHdr) != ""
}
