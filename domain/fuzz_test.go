package domain

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseAndKey checks that any body and key headers either parse into an
// event with a well-formed, deterministic dedup key, or fail with one of the
// documented errors. The seed corpus runs as part of `go test`.
func FuzzParseAndKey(f *testing.F) {
	f.Add([]byte(completion), "", "")
	f.Add([]byte(`{"event":"task.reopened","task_id":"t","reopened_at":"2024-01-15T10:30:00Z"}`), "idem", "")
	f.Add([]byte(`{"event":"task.assigned","task_id":"t"}`), "", "msg_1")
	f.Add([]byte(`{"event":"task.completed","task_id":"t","completed_at":"0000-01-01T00:00:00Z"}`), "", "")
	f.Add([]byte(`{"event":1}`), "", "")
	f.Add([]byte(`[]`), "", "")
	f.Add([]byte(`{"task_id":"\u0000"}`), "", "")
	f.Add([]byte(`{"event":"task.completed","task_id":"t","completed_at":"2024-01-15T10:30:00Z"}`), "derived:abc", "")
	f.Add([]byte("{\"event\":\"x\",\"task_id\":\"\xff\xfe\"}"), "", "")
	f.Add([]byte(`{"event":"task.completed","task_id":"t","completed_at":"9999-12-31T23:59:59-01:00"}`), "", "")
	f.Add([]byte(`{"event":"x","task_id":"\ud800"}`), "", "")
	f.Add([]byte(`{"event":"x","task_id":"\\ud800\ud83d\ude00"}`), "", "")
	f.Fuzz(func(t *testing.T, body []byte, idem, webhookID string) {
		ev, err := ParseEvent("src", body)
		if err != nil {
			var ve *ValidationError
			if !errors.Is(err, ErrInvalidJSON) && !errors.As(err, &ve) {
				t.Fatalf("undocumented error %T: %v", err, err)
			}
			return
		}
		if ev.Type == "" || ev.TaskID == "" {
			t.Fatalf("parsed event lacks type or task: %+v", ev)
		}
		// U+FFFD in an id comes from the body itself, never from an
		// escape that encodes no character (two such ids would merge).
		for _, id := range []string{ev.Type, ev.TaskID, ev.ProcessID, ev.CompletedBy, ev.EventID, ev.ExternalID} {
			if strings.ContainsRune(id, utf8.RuneError) && !bytes.Contains(body, []byte("\uFFFD")) &&
				!bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`)) {
				t.Fatalf("id %q holds U+FFFD the body %q does not", id, body)
			}
		}
		if (ev.IsCompletion() || ev.IsReopen()) == ev.OccurredAt.IsZero() {
			t.Fatalf("OccurredAt %v inconsistent with type %q", ev.OccurredAt, ev.Type)
		}
		h := KeyHeaders{IdempotencyKey: idem, WebhookID: webhookID}
		key, err := DeriveDedupKey(ev, h)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Code != CodeInvalidKey {
				t.Fatalf("key error %v", err)
			}
			return
		}
		if key.Explicit() != strings.HasPrefix(key.Value, "src:id:") ||
			key.Explicit() == strings.HasPrefix(key.Value, "src:derived:") || len(key.Value) > len("src:id:")+MaxKeyLength {
			t.Fatalf("malformed key %q from %s", key.Value, key.Origin)
		}
		if y := ev.OccurredAt.Year(); !ev.OccurredAt.IsZero() && (y < 1 || y > 9999) {
			t.Fatalf("accepted a time in year %d", y)
		}
		again, _ := DeriveDedupKey(ev, h)
		if again != key {
			t.Fatalf("key not deterministic: %v vs %v", key, again)
		}
	})
}
