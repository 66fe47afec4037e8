package domain

import (
	"errors"
	"testing"
	"time"
)

func TestParseEventAcceptsCanonicalPayload(t *testing.T) {
	t.Parallel()
	body := []byte(`{"event":"task.completed","task_id":"abc123","process_id":"xyz789",
		"completed_at":"2024-01-15T12:30:00.1234567+02:00","completed_by":"user@example.com",
		"event_id":"e1","external_id":"x1","extra":{"kept":true}}`)
	ev, err := ParseEvent("tallyfy", body)
	if err != nil {
		t.Fatalf("ParseEvent: %v", err)
	}
	want := time.Date(2024, 1, 15, 10, 30, 0, 123456000, time.UTC)
	if !ev.OccurredAt.Equal(want) || ev.OccurredAt.Location() != time.UTC {
		t.Errorf("OccurredAt = %v, want %v in UTC truncated to µs", ev.OccurredAt, want)
	}
	if ev.TaskID != "abc123" || ev.ProcessID != "xyz789" || ev.CompletedBy != "user@example.com" ||
		ev.EventID != "e1" || ev.ExternalID != "x1" || ev.Source != "tallyfy" || !ev.IsCompletion() {
		t.Errorf("unexpected event %+v", ev)
	}
	if string(ev.Raw) != string(body) {
		t.Error("Raw must be the body exactly as received")
	}
}

func TestParseEventReopenAndUnknownTypes(t *testing.T) {
	t.Parallel()
	ev, err := ParseEvent("s", []byte(`{"event":"task.reopened","task_id":"t","reopened_at":"2024-01-15T10:30:00Z"}`))
	if err != nil || !ev.IsReopen() || ev.OccurredAt.IsZero() {
		t.Fatalf("reopen: %+v, %v", ev, err)
	}
	ev, err = ParseEvent("s", []byte(`{"event":"task.assigned","task_id":"t"}`))
	if err != nil || ev.IsCompletion() || ev.IsReopen() || !ev.OccurredAt.IsZero() {
		t.Fatalf("unknown type: %+v, %v", ev, err)
	}
}

func TestParseEventRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, code, field string
	}{
		{"not json", `{"event":`, "", ""},
		{"invalid UTF-8 in a string", "{\"event\":\"x\",\"task_id\":\"\xff\xfe\"}", "", ""},
		{"invalid UTF-8 in an unknown field", "{\"event\":\"x\",\"task_id\":\"t\",\"note\":\"\xc3\"}", "", ""},
		{"not an object", `["task.completed"]`, CodeInvalidField, ""},
		{"json null", `null`, CodeInvalidField, ""},
		{"missing event", `{"task_id":"t"}`, CodeMissingField, "event"},
		{"empty event", `{"event":"","task_id":"t"}`, CodeMissingField, "event"},
		{"missing task_id", `{"event":"task.completed"}`, CodeMissingField, "task_id"},
		{"null task_id", `{"event":"x","task_id":null}`, CodeMissingField, "task_id"},
		{"numeric task_id", `{"event":"x","task_id":42}`, CodeInvalidField, "task_id"},
		{"event not string", `{"event":true,"task_id":"t"}`, CodeInvalidField, "event"},
		{"process_id object", `{"event":"x","task_id":"t","process_id":{}}`, CodeInvalidField, "process_id"},
		{"NUL in task_id", `{"event":"x","task_id":"a\u0000b"}`, CodeInvalidField, "task_id"},
		{"completion without time", `{"event":"task.completed","task_id":"t"}`, CodeMissingField, "completed_at"},
		{"bad completion time", `{"event":"task.completed","task_id":"t","completed_at":"yesterday"}`, CodeInvalidField, "completed_at"},
		{"time not string", `{"event":"task.completed","task_id":"t","completed_at":1705314600}`, CodeInvalidField, "completed_at"},
		{"year zero", `{"event":"task.completed","task_id":"t","completed_at":"0001-01-01T00:30:00+01:00"}`, CodeInvalidField, "completed_at"},
		{"year 10000 in UTC", `{"event":"task.completed","task_id":"t","completed_at":"9999-12-31T23:59:59-01:00"}`, CodeInvalidField, "completed_at"},
		{"reopen in year 10000", `{"event":"task.reopened","task_id":"t","reopened_at":"9999-12-31T23:30:00-00:45"}`, CodeInvalidField, "reopened_at"},
		{"reopen without time", `{"event":"task.reopened","task_id":"t","completed_at":"2024-01-15T10:30:00Z"}`, CodeMissingField, "reopened_at"},
		{"lone high surrogate in task_id", `{"event":"x","task_id":"a\ud800"}`, CodeInvalidField, "task_id"},
		{"lone low surrogate in process_id", `{"event":"x","task_id":"t","process_id":"\uDFFF"}`, CodeInvalidField, "process_id"},
		{"high surrogate before a non-surrogate escape", `{"event":"x","task_id":"t","event_id":"\udbff\u0041"}`, CodeInvalidField, "event_id"},
		{"two high surrogates", `{"event":"x","task_id":"t","external_id":"\ud800\udbff"}`, CodeInvalidField, "external_id"},
		{"high surrogate at the end", `{"event":"x\ud83d","task_id":"t"}`, CodeInvalidField, "event"},
		{"lone surrogate after an escaped backslash", `{"event":"x","task_id":"t","completed_by":"\\\ud800"}`, CodeInvalidField, "completed_by"},
		{"overlong id", `{"event":"x","task_id":"` + string(make([]byte, 0)) + repeat("a", MaxIDLength+1) + `"}`, CodeInvalidField, "task_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEvent("s", []byte(tt.body))
			if tt.code == "" {
				if !errors.Is(err, ErrInvalidJSON) {
					t.Fatalf("err = %v, want ErrInvalidJSON", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			if ve.Code != tt.code || ve.Field != tt.field {
				t.Errorf("got code %q field %q, want %q %q (%v)", ve.Code, ve.Field, tt.code, tt.field, err)
			}
		})
	}
}

func repeat(s string, n int) string {
	out := make([]byte, 0, n*len(s))
	for range n {
		out = append(out, s...)
	}
	return string(out)
}

func TestParseEventAcceptsTheYearBounds(t *testing.T) {
	t.Parallel()
	for _, at := range []string{"0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:30:00-01:00"} {
		if _, err := ParseEvent("s", []byte(`{"event":"task.completed","task_id":"t","completed_at":"`+at+`"}`)); err != nil {
			t.Errorf("%s: %v", at, err)
		}
	}
}

// Escapes that encode characters decode to distinct ids: paired
// surrogates, and text that only looks like an escape after an escaped
// backslash.
func TestParseEventKeepsEscapedCharacters(t *testing.T) {
	t.Parallel()
	for escaped, want := range map[string]string{
		`\ud83d\ude00`:    "\U0001F600",
		`a\uD800\uDC00b`:  "a\U00010000b",
		`\\ud800`:         `\ud800`,
		`\\\\ud800\u00e9`: `\\ud800` + "\u00e9",
		`\ufffd`:          "\uFFFD",
	} {
		ev, err := ParseEvent("s", []byte(`{"event":"x","task_id":"`+escaped+`"}`))
		if err != nil || ev.TaskID != want {
			t.Errorf("task_id %s = %q, %v; want %q", escaped, ev.TaskID, err, want)
		}
	}
}

func TestBodyField(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"evt_1","n":3,"z":null}`)
	for field, want := range map[string]string{"id": "evt_1", "z": "", "absent": ""} {
		if got, err := BodyField(body, field); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", field, got, err, want)
		}
	}
	var ve *ValidationError
	if _, err := BodyField(body, "n"); !errors.As(err, &ve) || ve.Code != CodeInvalidField {
		t.Errorf("numeric field: %v", err)
	}
}

func BenchmarkParseEvent(b *testing.B) {
	body := []byte(`{"event":"task.completed","task_id":"abc123","process_id":"xyz789",` +
		`"completed_at":"2024-01-15T10:30:00Z","completed_by":"user@example.com","event_id":"evt-42","note":"a \"quoted\" word"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent("tallyfy", body); err != nil {
			b.Fatal(err)
		}
	}
}
