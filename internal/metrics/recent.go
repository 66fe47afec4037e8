package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// WebhookOutcomes sums taskledger_webhooks_total over sources: deliveries
// answered so far, by outcome. Every outcome is present, zero or not.
func (m *Metrics) WebhookOutcomes() map[string]uint64 {
	out := map[string]uint64{OutcomeAccepted: 0, OutcomeDuplicate: 0, OutcomeRejected: 0, OutcomeUnavailable: 0}
	if m == nil {
		return out
	}
	ch := make(chan prometheus.Metric)
	go func() {
		m.webhooks.Collect(ch)
		close(ch)
	}()
	for metric := range ch {
		var pb dto.Metric
		if err := metric.Write(&pb); err != nil {
			continue
		}
		for _, l := range pb.GetLabel() {
			if l.GetName() == "outcome" {
				out[l.GetValue()] += uint64(pb.GetCounter().GetValue())
			}
		}
	}
	return out
}

// Recent keeps a short history of the webhook outcome counters, sampled at
// a fixed interval, to tell how many deliveries had each outcome over the
// last minutes.
type Recent struct {
	read     func() map[string]uint64
	interval time.Duration
	keep     int // samples kept

	mu      sync.Mutex
	samples []outcomeSample // oldest first
}

type outcomeSample struct {
	at     time.Time
	counts map[string]uint64
}

// NewRecent keeps samples of read taken every interval, for span; call Run
// to take them.
func NewRecent(read func() map[string]uint64, interval, span time.Duration) *Recent {
	return &Recent{read: read, interval: interval, keep: int(span/interval) + 1}
}

// Run samples until ctx ends, the first sample at once.
func (r *Recent) Run(ctx context.Context) {
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		r.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *Recent) sample(now time.Time) {
	counts := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, outcomeSample{at: now, counts: counts})
	if len(r.samples) > r.keep {
		r.samples = r.samples[len(r.samples)-r.keep:]
	}
}

// Since returns the deliveries by outcome from the latest sample at or
// before now-window (or the oldest kept, if younger) up to now, and the
// span that covers: shorter than window while the history is young.
func (r *Recent) Since(window time.Duration, now time.Time) (map[string]uint64, time.Duration) {
	current := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return current, 0
	}
	from := r.samples[0]
	for _, s := range r.samples {
		if s.at.After(now.Add(-window)) {
			break
		}
		from = s
	}
	out := make(map[string]uint64, len(current))
	for outcome, n := range current {
		out[outcome] = n - min(from.counts[outcome], n)
	}
	return out, now.Sub(from.at)
}
