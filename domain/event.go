// Package domain holds taskledger's vocabulary: webhook events, their
// validation, dedup keys and the completion-history policies. It performs no
// I/O, so every rule here is testable with plain values.
package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Event types understood by the projections. Other types are accepted,
// stored and ignored.
const (
	TypeCompleted = "task.completed"
	TypeReopened  = "task.reopened"
)

// MaxIDLength bounds identifiers (task, process, user, event ids).
const MaxIDLength = 512

// Event is one validated webhook fact. Raw is the body exactly as received.
type Event struct {
	Source      string
	Type        string
	TaskID      string
	ProcessID   string
	CompletedBy string
	EventID     string
	ExternalID  string
	// OccurredAt is completed_at for completions and reopened_at for reopens,
	// in UTC and truncated to microseconds (the precision Postgres keeps).
	// It is zero for other event types.
	OccurredAt time.Time
	Raw        []byte
}

// IsCompletion reports whether the event completes a task.
func (e Event) IsCompletion() bool { return e.Type == TypeCompleted }

// IsReopen reports whether the event reopens a task.
func (e Event) IsReopen() bool { return e.Type == TypeReopened }

// ParseEvent decodes and validates a webhook body sent by source. It returns
// an error wrapping ErrInvalidJSON when the body is not JSON (JSON text is
// UTF-8: a body that is not valid UTF-8 is not JSON), and a
// *ValidationError when it is JSON but not a valid event.
func ParseEvent(source string, body []byte) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, fmt.Errorf("%w: it is not valid UTF-8", ErrInvalidJSON)
	}
	if !json.Valid(body) {
		return Event{}, fmt.Errorf("%w", ErrInvalidJSON)
	}
	var f struct{ event, taskID, processID, completedBy, eventID, externalID, completedAt, reopenedAt []byte }
	isObject := eachField(body, func(name string, raw []byte) {
		switch name { // the last of a repeated field wins
		case "event":
			f.event = raw
		case "task_id":
			f.taskID = raw
		case "process_id":
			f.processID = raw
		case "completed_by":
			f.completedBy = raw
		case "event_id":
			f.eventID = raw
		case "external_id":
			f.externalID = raw
		case "completed_at":
			f.completedAt = raw
		case "reopened_at":
			f.reopenedAt = raw
		}
	})
	if !isObject {
		return Event{}, &ValidationError{Code: CodeInvalidField, Message: "body must be a JSON object"}
	}
	ev := Event{Source: source, Raw: body}
	var err error
	if ev.Type, err = requiredString("event", f.event); err != nil {
		return Event{}, err
	}
	if ev.TaskID, err = requiredString("task_id", f.taskID); err != nil {
		return Event{}, err
	}
	for _, o := range [...]struct {
		name string
		raw  []byte
		dst  *string
	}{
		{"process_id", f.processID, &ev.ProcessID},
		{"completed_by", f.completedBy, &ev.CompletedBy},
		{"event_id", f.eventID, &ev.EventID},
		{"external_id", f.externalID, &ev.ExternalID},
	} {
		if *o.dst, err = optionalString(o.name, o.raw); err != nil {
			return Event{}, err
		}
	}
	switch ev.Type {
	case TypeCompleted:
		ev.OccurredAt, err = requiredTime("completed_at", f.completedAt)
	case TypeReopened:
		ev.OccurredAt, err = requiredTime("reopened_at", f.reopenedAt)
	}
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

// BodyField returns the top-level string field name of a JSON object body,
// "" when it is absent or null: where a source puts its own delivery id.
func BodyField(body []byte, name string) (string, error) {
	if !utf8.Valid(body) || !json.Valid(body) {
		return "", ErrInvalidJSON
	}
	var raw []byte
	if !eachField(body, func(n string, r []byte) {
		if n == name {
			raw = r
		}
	}) && !bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return "", fmt.Errorf("%w: not an object", ErrInvalidJSON)
	}
	return optionalString(name, raw)
}

// ValidText reports whether s is text Postgres can store: valid UTF-8
// without NUL characters.
func ValidText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// requiredString is optionalString that refuses an absent, null or empty
// field.
func requiredString(name string, raw []byte) (string, error) {
	s, err := optionalString(name, raw)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", missing(name)
	}
	return s, nil
}

// optionalString decodes the raw value of field name: "" for an absent
// (nil) or null field, and an error for a field of another JSON type, with
// an unpaired surrogate escape, or with text Postgres cannot store.
func optionalString(name string, raw []byte) (string, error) {
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	s, ok := stringValue(raw)
	switch {
	case !ok:
		return "", invalid(name, "must be a string")
	case hasLoneSurrogate(raw):
		return "", invalid(name, `must not contain an unpaired UTF-16 surrogate escape (such as \ud800), which encodes no character`)
	case len(s) > MaxIDLength:
		return "", invalid(name, "is longer than %d bytes", MaxIDLength)
	case !ValidText(s):
		return "", invalid(name, "must be valid UTF-8 without NUL characters")
	}
	return s, nil
}

func requiredTime(name string, raw []byte) (time.Time, error) {
	s, err := requiredString(name, raw)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid(name, "must be an RFC 3339 timestamp, e.g. 2024-01-15T10:30:00Z")
	}
	if t = t.UTC(); t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, invalid(name, "must fall in the years 0001 to 9999 in UTC")
	}
	return t.Truncate(time.Microsecond), nil
}

// hasLoneSurrogate reports whether the JSON string literal lit (well formed,
// quotes included) holds a \uXXXX escape of a UTF-16 surrogate that is not
// a high surrogate followed by an escaped low one. encoding/json decodes
// every such escape to U+FFFD, so "\ud800" and "\udbff" would otherwise
// become the same id.
func hasLoneSurrogate(lit []byte) bool {
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			continue
		}
		i++ // the escaped character: a backslash here is not an escape
		if lit[i] != 'u' {
			continue
		}
		r := escapedUnit(lit[i+1:])
		i += 4
		switch {
		case !utf16.IsSurrogate(r):
		case r >= 0xdc00: // a low surrogate with no high one before it
			return true
		case i+6 >= len(lit) || lit[i+1] != '\\' || lit[i+2] != 'u':
			return true
		default:
			if low := escapedUnit(lit[i+3:]); low < 0xdc00 || low > 0xdfff {
				return true
			}
			i += 6
		}
	}
	return false
}

// escapedUnit is the UTF-16 code unit of the four hex digits that start hex.
func escapedUnit(hex []byte) rune {
	var r rune
	for _, c := range hex[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
