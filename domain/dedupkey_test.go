package domain

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mustParse(t *testing.T, source, body string) Event {
	t.Helper()
	ev, err := ParseEvent(source, []byte(body))
	if err != nil {
		t.Fatalf("ParseEvent(%s): %v", body, err)
	}
	return ev
}

const completion = `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z","event_id":"ev-9"}`

func TestDedupKeyPrecedence(t *testing.T) {
	t.Parallel()
	ev := mustParse(t, "tallyfy", completion)
	noEventID := mustParse(t, "tallyfy", `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	tests := []struct {
		name    string
		ev      Event
		headers KeyHeaders
		want    string
		origin  KeyOrigin
	}{
		{"idempotency header wins", ev, KeyHeaders{IdempotencyKey: "idem", DeliveryID: "d-1", WebhookID: "msg_1"}, "tallyfy:id:idem", OriginIdempotencyKey},
		{"delivery id next", ev, KeyHeaders{DeliveryID: "d-1", WebhookID: "msg_1"}, "tallyfy:id:d-1", OriginDeliveryID},
		{"webhook-id next", ev, KeyHeaders{WebhookID: "msg_1"}, "tallyfy:id:msg_1", OriginWebhookID},
		{"event_id next", ev, KeyHeaders{}, "tallyfy:id:ev-9", OriginEventID},
		{"derived last", noEventID, KeyHeaders{}, "tallyfy:derived:", OriginDerived},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := DeriveDedupKey(tt.ev, tt.headers)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(key.Value, tt.want) || key.Origin != tt.origin {
				t.Errorf("key = %+v, want prefix %q origin %q", key, tt.want, tt.origin)
			}
			if key.Explicit() != (tt.origin != OriginDerived) {
				t.Errorf("Explicit() = %v for origin %s", key.Explicit(), tt.origin)
			}
		})
	}
}

func TestDerivedKeyIdentifiesTheFact(t *testing.T) {
	t.Parallel()
	key := func(source, body string) string {
		k, err := DeriveDedupKey(mustParse(t, source, body), KeyHeaders{})
		if err != nil {
			t.Fatal(err)
		}
		return k.Value
	}
	base := key("tallyfy", `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z","completed_by":"a"}`)
	same := []string{
		// The same instant in another zone, other fields changed, reformatted.
		`{"completed_by":"b", "task_id":"t1","event":"task.completed","completed_at":"2024-01-15T11:30:00+01:00"}`,
		// Sub-microsecond digits are beyond Postgres precision.
		`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00.0000001Z"}`,
	}
	for _, body := range same {
		if got := key("tallyfy", body); got != base {
			t.Errorf("%s: key %s, want %s", body, got, base)
		}
	}
	different := map[string]string{
		"other source":          "zapier",
		"reopen-and-complete":   `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-16T10:30:00Z"}`,
		"other task":            `{"event":"task.completed","task_id":"t2","completed_at":"2024-01-15T10:30:00Z"}`,
		"other type, same time": `{"event":"task.reopened","task_id":"t1","reopened_at":"2024-01-15T10:30:00Z"}`,
	}
	for name, body := range different {
		source := "tallyfy"
		if name == "other source" {
			source, body = body, `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`
		}
		if got := key(source, body); got == base {
			t.Errorf("%s: key collides with base %s", name, base)
		}
	}
	// Unknown types have no time of their own: identical bodies collapse,
	// different bodies do not.
	a := key("s", `{"event":"task.assigned","task_id":"t","to":"x"}`)
	if a != key("s", `{ "event": "task.assigned", "task_id": "t", "to": "x" }`) {
		t.Error("whitespace-only difference changed an unknown-type key")
	}
	if a == key("s", `{"event":"task.assigned","task_id":"t","to":"y"}`) {
		t.Error("different unknown-type bodies share a key")
	}
}

// A sender cannot choose a key equal to another event's derived key, by
// any layer that supplies sender-chosen keys.
func TestSenderKeysNeverEqualDerivedKeys(t *testing.T) {
	t.Parallel()
	derived, _ := DeriveDedupKey(mustParse(t, "s", `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`), KeyHeaders{})
	tail := strings.TrimPrefix(derived.Value, "s:")
	hash := strings.TrimPrefix(derived.Value, "s:derived:")
	other := mustParse(t, "s", `{"event":"task.completed","task_id":"t2","completed_at":"2024-01-15T10:30:00Z"}`)
	for _, v := range []string{tail, hash, derived.Value, ":" + tail, "derived:" + hash} {
		for _, h := range []KeyHeaders{{IdempotencyKey: v}, {DeliveryID: v}, {WebhookID: v}} {
			k, err := DeriveDedupKey(other, h)
			if err != nil || k.Value == derived.Value {
				t.Errorf("headers %+v: key %q, %v collides with derived %q", h, k.Value, err, derived.Value)
			}
		}
		withEventID := mustParse(t, "s", fmt.Sprintf(`{"event":"task.completed","task_id":"t2","completed_at":"2024-01-15T10:30:00Z","event_id":%q}`, v))
		if k, _ := DeriveDedupKey(withEventID, KeyHeaders{}); k.Value == derived.Value {
			t.Errorf("event_id %q collides with derived %q", v, derived.Value)
		}
	}
}

func TestDedupKeyRejectsUnusableKeys(t *testing.T) {
	t.Parallel()
	ev := mustParse(t, "s", completion)
	for name, h := range map[string]KeyHeaders{
		"too long":     {IdempotencyKey: strings.Repeat("k", MaxKeyLength+1)},
		"control char": {WebhookID: "a\tb"},
		"non-ascii":    {IdempotencyKey: "clé"},
	} {
		_, err := DeriveDedupKey(ev, h)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Code != CodeInvalidKey {
			t.Errorf("%s: err = %v, want %s", name, err, CodeInvalidKey)
		}
	}
	if _, err := DeriveDedupKey(ev, KeyHeaders{IdempotencyKey: strings.Repeat("k", MaxKeyLength)}); err != nil {
		t.Errorf("a key of exactly %d bytes: %v", MaxKeyLength, err)
	}
}

func TestValidSource(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"tallyfy", "a", "0x", "my-tool_2", strings.Repeat("a", 64)} {
		if !ValidSource(s) {
			t.Errorf("ValidSource(%q) = false", s)
		}
	}
	for _, s := range []string{"", "Tallyfy", "-a", "_a", "a.b", "a/b", strings.Repeat("a", 65)} {
		if ValidSource(s) {
			t.Errorf("ValidSource(%q) = true", s)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Policy{"": PolicyAll, "all": PolicyAll, "first": PolicyFirst, "latest": PolicyLatest} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("last"); err == nil {
		t.Error("ParsePolicy(last) accepted")
	}
}
