package integration_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/metrics"
	"github.com/taskledger/taskledger/projections"
)

// afterTheWindow waits until JetStream's duplicate window, counted from
// now, has passed: what a late re-send sees.
func afterTheWindow(window time.Duration) { time.Sleep(window + 100*time.Millisecond) }

func TestResendAfterTheWindowIsAnsweredWithTheOriginalSequence(t *testing.T) {
	t.Parallel()
	const window = time.Second
	b := setupRunning(t, func(c *config.Config) { c.DuplicateWindow = window })
	body := completion("late", "2024-01-15T10:30:00Z")
	first := b.accept(t, body)
	keyed := completion("keyed", "2024-01-15T10:30:00Z")
	second := b.post(t, "tallyfy", keyed, "Idempotency-Key", "order-7")
	if second.Status != http.StatusAccepted {
		t.Fatalf("keyed event: %+v", second)
	}
	b.waitApplied(t, second.StreamSeq)
	afterTheWindow(window)

	// Both tiers answer alike; JetStream purges its window lazily, so post
	// until the durable tier has answered one.
	eventually(t, "the durable tier to answer a re-send", func() bool {
		again := b.post(t, "tallyfy", body)
		if again.Status != http.StatusOK || !again.Duplicate || again.StreamSeq != first {
			t.Fatalf("re-send after the window: %+v, want 200 duplicate of seq %d", again, first)
		}
		return b.scrape(t).value(t, "taskledger_dedup_hits_total", "tier", "durable") > 0
	})
	if again := b.post(t, "tallyfy", keyed, "Idempotency-Key", "order-7"); again.Status != http.StatusOK || again.StreamSeq != second.StreamSeq {
		t.Errorf("keyed re-send after the window: %+v, want 200 duplicate of seq %d", again, second.StreamSeq)
	}
	reused := b.post(t, "tallyfy", completion("keyed", "2024-01-16T10:30:00Z"), "Idempotency-Key", "order-7")
	if reused.Status != http.StatusUnprocessableEntity || reused.Error.Code != projections.ReasonKeyReused {
		t.Errorf("key reused with another body after the window: %+v, want 422 %s", reused, projections.ReasonKeyReused)
	}
	if n := b.messages(t); n != 2 {
		t.Errorf("stream holds %d events, want the two originals only", n)
	}
}

// TestResendPastTheIngestTiersIsDroppedOrDeadLettered stores re-sends
// straight into the stream after the window, as ingest does when Postgres
// cannot answer in time: the key stage finds them, the policies drop the
// exact duplicate and set the reused key aside. The duplicate's lateness is
// observed as caught by the key stage; the reused key is no re-send.
func TestResendPastTheIngestTiersIsDroppedOrDeadLettered(t *testing.T) {
	t.Parallel()
	const window = time.Second
	b := setupRunning(t, func(c *config.Config) { c.DuplicateWindow = window })
	body := completion("fallback", "2024-01-15T10:30:00Z")
	r := b.post(t, "tallyfy", body, "Idempotency-Key", "k-1")
	if r.Status != http.StatusAccepted {
		t.Fatalf("original: %+v", r)
	}
	b.waitApplied(t, r.StreamSeq)
	before := b.scrape(t)
	afterTheWindow(window)
	b.resend(t, r.DedupKey, body)
	reusedSeq := b.resend(t, r.DedupKey, completion("fallback", "2024-01-16T10:30:00Z"))
	b.waitApplied(t, reusedSeq)

	after := b.scrape(t)
	tier := []string{"tier", metrics.TierKeyStage}
	if got := delta(t, before, after, "taskledger_resend_delay_seconds", tier...); got != 1 {
		t.Errorf("resend delays observed by the key stage: +%v, want +1", got)
	}
	late := after.find("taskledger_resend_delay_seconds", tier...).GetHistogram().GetSampleSum() -
		before.find("taskledger_resend_delay_seconds", tier...).GetHistogram().GetSampleSum()
	if late < window.Seconds() || late > (window+waitLimit).Seconds() {
		t.Errorf("the re-send was observed %vs late, want past the window (%v)", late, window)
	}

	if h := b.history(t, "fallback", domain.PolicyAll); len(h.Completions) != 1 || h.Completions[0].StreamSeq != r.StreamSeq {
		t.Errorf("all: %+v, want the original once", h.Completions)
	}
	var reused []deadLetterView
	for _, d := range b.deadLetters(t, false) {
		if d.StreamSeq == reusedSeq && strings.HasPrefix(d.Reason, projections.ReasonKeyReused) {
			reused = append(reused, d)
		}
	}
	if len(reused) != len(projections.All) {
		t.Errorf("dead letters %+v, want one %s per policy for seq %d", b.deadLetters(t, false), projections.ReasonKeyReused, reusedSeq)
	}
}

// resend stores body under dedup key straight into the stream, as ingest
// does when the durable tier cannot answer, once JetStream's window has
// forgotten the key (it purges lazily: a re-send it still drops is sent
// again). It returns the stream sequence.
func (b *bundle) resend(t *testing.T, key, body string) (seq uint64) {
	t.Helper()
	eventually(t, "JetStream to store a re-send", func() bool {
		m := nats.NewMsg(b.cfg.SubjectPrefix + ".tallyfy")
		m.Data = []byte(body)
		m.Header.Set(nats.MsgIdHdr, key)
		ack, err := b.js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatalf("publish a re-send: %v", err)
		}
		seq = ack.Sequence
		return !ack.Duplicate
	})
	return seq
}
