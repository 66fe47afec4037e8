package ingest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSamplerLetsOneThroughPerInterval: of the events within one interval,
// racing or not, exactly one is let through; the next interval lets
// another.
func TestSamplerLetsOneThroughPerInterval(t *testing.T) {
	t.Parallel()
	var s sampler
	start := time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)
	var allowed atomic.Int32
	var racing sync.WaitGroup
	for i := range 64 {
		racing.Go(func() {
			if s.allow(start.Add(time.Duration(i) * delaySampleEvery / 128)) {
				allowed.Add(1)
			}
		})
	}
	racing.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d of 64 events in one interval let through, want 1", n)
	}
	if s.allow(start.Add(delaySampleEvery / 2)) {
		t.Error("an event inside the interval was let through")
	}
	if !s.allow(start.Add(2 * delaySampleEvery)) {
		t.Error("the first event of a later interval was held back")
	}
}
