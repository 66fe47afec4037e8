package domain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"time"
	"unicode"
)

// MaxKeyLength bounds a sender-supplied idempotency key.
const MaxKeyLength = 255

// sourcePattern is the grammar of a source name in /v1/webhooks/{source}.
var sourcePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidSource reports whether name is a well-formed source name.
func ValidSource(name string) bool { return sourcePattern.MatchString(name) }

// KeyOrigin tells which layer supplied an event's dedup key.
type KeyOrigin string

// Key origins, in order of precedence.
const (
	OriginIdempotencyKey KeyOrigin = "idempotency-key"
	OriginDeliveryID     KeyOrigin = "delivery-id" // the source's id_header or id_field
	OriginWebhookID      KeyOrigin = "webhook-id"
	OriginEventID        KeyOrigin = "event_id"
	OriginDerived        KeyOrigin = "derived"
)

// DedupKey identifies an event. Its Value is scoped by source and is what
// taskledger sends as Nats-Msg-Id. Sender-chosen keys and derived keys live
// in disjoint namespaces, "<source>:id:<key>" and "<source>:derived:<hash>",
// so no sender can choose a key equal to another event's derived one.

type DedupKey struct {
	Value  string
	Origin KeyOrigin
}

// Explicit reports whether the sender chose the key. Reusing an explicit key
// with a different body is a client error; a derived key cannot be reused
// that way because it is computed from the event itself.
func (k DedupKey) Explicit() bool { return k.Origin != OriginDerived }

// KeyHeaders carries what a delivery may supply as its dedup key besides
// the body's event_id.
type KeyHeaders struct {
	IdempotencyKey string // Idempotency-Key, or else X-Idempotency-Key
	DeliveryID     string // the source's own delivery id (its id_header or id_field)
	WebhookID      string // webhook-id (Standard Webhooks)
}

// Key namespaces after the source: sender-chosen and derived keys never meet.
const (
	senderNamespace  = ":id:"
	derivedNamespace = ":derived:"
)

// DeriveDedupKey picks the event's dedup key, the first present of: the
// idempotency-key header, the source's own delivery id, the webhook-id
// header, the body's event_id, and last a hash of source, event type, task
// id and the event's own time.
func DeriveDedupKey(ev Event, h KeyHeaders) (DedupKey, error) {
	for _, c := range []struct {
		value  string
		origin KeyOrigin
	}{
		{h.IdempotencyKey, OriginIdempotencyKey},
		{h.DeliveryID, OriginDeliveryID},
		{h.WebhookID, OriginWebhookID},
		{ev.EventID, OriginEventID},
	} {
		if c.value == "" {
			continue
		}
		if err := checkKey(string(c.origin), c.value); err != nil {
			return DedupKey{}, err
		}
		return DedupKey{Value: ev.Source + senderNamespace + c.value, Origin: c.origin}, nil
	}
	return DedupKey{Value: ev.Source + derivedNamespace + derivedHash(ev), Origin: OriginDerived}, nil
}

// derivedHash hashes the fields that make an event the same fact. Events
// without their own time (unknown types) fall back to the compacted body, so
// byte-identical retries still collapse.
func derivedHash(ev Event) string {
	h := sha256.New()
	for _, part := range []string{ev.Source, ev.Type, ev.TaskID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	if ev.OccurredAt.IsZero() {
		h.Write([]byte(BodyDigest(ev.Raw)))
	} else {
		h.Write([]byte(ev.OccurredAt.Format(time.RFC3339Nano)))
	}
	return hex.EncodeToString(h.Sum(nil)[:20])
}

// BodyDigest is the hex SHA-256 of body with insignificant JSON whitespace
// removed, so that re-indented retries of one body compare equal.
func BodyDigest(body []byte) string {
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err == nil {
		body = compact.Bytes()
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func checkKey(origin, key string) error {
	if len(key) > MaxKeyLength {
		return &ValidationError{Code: CodeInvalidKey, Field: origin, Message: "is longer than 255 bytes"}
	}
	for _, r := range key {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return &ValidationError{Code: CodeInvalidKey, Field: origin, Message: "must be printable ASCII"}
		}
	}
	return nil
}
