package eventlog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/domain"
)

func TestRecordRoundTrips(t *testing.T) {
	t.Parallel()
	body := []byte(`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	ev, err := domain.ParseEvent("tallyfy", body)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := domain.DeriveDedupKey(ev, domain.KeyHeaders{IdempotencyKey: "k1"})
	msg := Record{Source: "tallyfy", Key: key, Body: body, ReceivedAt: time.Now(),
		RequestHeaders: map[string]string{"webhook-id": "msg_1"}}.Message("x.events.tallyfy")
	if msg.Header.Get(nats.MsgIdHdr) != "tallyfy:id:k1" || msg.Header.Get(HeaderRequestPrefix+"Webhook-Id") != "msg_1" ||
		msg.Header.Get(HeaderKeyOrigin) != "idempotency-key" {
		t.Errorf("headers %v", msg.Header)
	}
	rec, err := Decode(7, msg.Subject, msg.Header, msg.Data)
	if err != nil || rec.Seq != 7 || rec.DedupKey != "tallyfy:id:k1" || rec.TaskID != "t1" || rec.Source != "tallyfy" {
		t.Errorf("decoded %+v, %v", rec, err)
	}
}

func TestDecodeMessagesFromOtherTools(t *testing.T) {
	t.Parallel()
	body := []byte(`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	rec, err := Decode(1, "x.events.zapier", nats.Header{}, body)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := domain.ParseEvent("zapier", body)
	want, _ := domain.DeriveDedupKey(ev, domain.KeyHeaders{})
	if rec.Source != "zapier" || rec.DedupKey != want.Value {
		t.Errorf("without headers: source %q key %q, want zapier %q", rec.Source, rec.DedupKey, want.Value)
	}
	if _, err := Decode(2, "x.events.s", nats.Header{}, []byte("not json")); !errors.Is(err, ErrUndecodable) {
		t.Errorf("garbage: %v, want ErrUndecodable", err)
	}
}

// FuzzDecode: any message either decodes into an event with a key scoped by
// its source, or fails with ErrUndecodable.
func FuzzDecode(f *testing.F) {
	f.Add("x.events.tallyfy", "", "", []byte(`{"event":"task.completed","task_id":"t","completed_at":"2024-01-15T10:30:00Z"}`))
	f.Add("x.events.s", "s:key", "s", []byte(`{"event":"task.reopened","task_id":"t","reopened_at":"2024-01-15T10:30:00Z"}`))
	f.Add("nodots", "", "", []byte(`{"event":"x","task_id":"t"}`))
	f.Add("a.b", "", "", []byte(`{`))
	f.Fuzz(func(t *testing.T, subject, msgID, source string, body []byte) {
		h := nats.Header{}
		if msgID != "" {
			h.Set(nats.MsgIdHdr, msgID)
		}
		if source != "" {
			h.Set(HeaderSource, source)
		}
		rec, err := Decode(1, subject, h, body)
		if err != nil {
			if !errors.Is(err, ErrUndecodable) {
				t.Fatalf("error %v does not wrap ErrUndecodable", err)
			}
			return
		}
		if rec.DedupKey == "" || (msgID != "" && rec.DedupKey != h.Get(nats.MsgIdHdr)) {
			t.Fatalf("key %q for Nats-Msg-Id %q", rec.DedupKey, msgID)
		}
		if msgID == "" && !strings.HasPrefix(rec.DedupKey, rec.Source+":") {
			t.Fatalf("derived key %q not scoped by source %q", rec.DedupKey, rec.Source)
		}
	})
}

func TestNewRecordValidatesAndKeys(t *testing.T) {
	t.Parallel()
	body := []byte(`{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z","event_id":"e-7"}`)
	rec, err := NewRecord("tallyfy", body, time.Now())
	if err != nil || rec.Key.Value != "tallyfy:id:e-7" || rec.Source != "tallyfy" || string(rec.Body) != string(body) {
		t.Errorf("NewRecord = %+v, %v", rec, err)
	}
	var ve *domain.ValidationError
	if _, err := NewRecord("tallyfy", []byte(`{"event":"task.completed"}`), time.Now()); !errors.As(err, &ve) {
		t.Errorf("invalid body: %v, want a *domain.ValidationError", err)
	}
}
