package metrics

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRecentCountsOutcomesInAWindow(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry(), Options{})
	answer := func(status int) {
		h := m.Webhooks(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/webhooks/s", nil))
	}
	r := NewRecent(m.WebhookOutcomes, 10*time.Second, time.Minute)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	if got, span := r.Since(time.Minute, start); span != 0 || !reflect.DeepEqual(got,
		map[string]uint64{"accepted": 0, "duplicate": 0, "rejected": 0, "unavailable": 0}) {
		t.Errorf("before any sample: %v over %v", got, span)
	}
	answer(http.StatusAccepted) // before the first sample: outside every window
	r.sample(start)
	answer(http.StatusAccepted)
	answer(http.StatusOK)
	r.sample(start.Add(10 * time.Second))
	answer(http.StatusUnprocessableEntity)
	answer(http.StatusServiceUnavailable)
	answer(http.StatusTooManyRequests)

	for _, tt := range []struct {
		window, span time.Duration
		want         map[string]uint64
	}{
		{time.Minute, 15 * time.Second, map[string]uint64{"accepted": 1, "duplicate": 1, "rejected": 1, "unavailable": 2}},
		{5 * time.Second, 5 * time.Second, map[string]uint64{"accepted": 0, "duplicate": 0, "rejected": 1, "unavailable": 2}},
	} {
		got, span := r.Since(tt.window, start.Add(15*time.Second))
		if !reflect.DeepEqual(got, tt.want) || span != tt.span {
			t.Errorf("last %v: %v over %v, want %v over %v", tt.window, got, span, tt.want, tt.span)
		}
	}

	// Only span's worth of samples is kept.
	for i := 2; i < 20; i++ {
		r.sample(start.Add(time.Duration(i) * 10 * time.Second))
	}
	if n := len(r.samples); n != 7 {
		t.Errorf("%d samples kept, want a minute's worth, 7", n)
	}
	if _, span := r.Since(time.Hour, start.Add(190*time.Second)); span != time.Minute {
		t.Errorf("an hour asked of a minute's history covers %v, want 1m", span)
	}
}
