package loadgen

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	var l Latencies
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0.1: time.Millisecond} {
		if got := l.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if l[0] != 100*time.Millisecond {
		t.Error("Percentile reordered its receiver")
	}
	if (Latencies{}).Percentile(50) != 0 {
		t.Error("empty latencies")
	}
}

func TestGenerateIsDeterministicAndRealistic(t *testing.T) {
	t.Parallel()
	a, b := Generate(2000, 7), Generate(2000, 7)
	if strings.Join(a.Bodies, "\n") != strings.Join(b.Bodies, "\n") || len(a.Bodies) != 2000 || len(a.Tasks) != 250 {
		t.Fatal("Generate is not deterministic for a seed, or has the wrong size")
	}
	seen := map[string]bool{}
	var repeats, reopens int
	for _, body := range a.Bodies {
		if seen[body] {
			repeats++
		}
		seen[body] = true
		if strings.Contains(body, "task.reopened") {
			reopens++
		}
	}
	if repeats < 100 || reopens < 100 {
		t.Errorf("%d repeats and %d reopens in 2000 bodies, want roughly 10%% each", repeats, reopens)
	}
}

func TestWaitCaughtUp(t *testing.T) {
	t.Parallel()
	behind := []uint64{3, 2, 0}
	lag := func(context.Context) (uint64, error) {
		n := behind[0]
		behind = behind[1:]
		return n, nil
	}
	if _, err := WaitCaughtUp(context.Background(), lag, time.Minute); err != nil || len(behind) != 0 {
		t.Errorf("err %v, %d lag readings left", err, len(behind))
	}
	stuck := func(context.Context) (uint64, error) { return 7, nil }
	if _, err := WaitCaughtUp(context.Background(), stuck, 30*time.Millisecond); err == nil || !strings.Contains(err.Error(), "7 events behind") {
		t.Errorf("stuck projections: %v", err)
	}
}
