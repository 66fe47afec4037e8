package consumers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// levels counts the lines of a JSON log by level.
func levels(t *testing.T, log *bytes.Buffer) map[string]int {
	t.Helper()
	counts := map[string]int{}
	lines := bufio.NewScanner(log)
	for lines.Scan() {
		var line struct {
			Level string `json:"level"`
		}
		if err := json.Unmarshal(lines.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", lines.Text(), err)
		}
		counts[line.Level]++
	}
	return counts
}

func TestOutageIsLoggedOnceWhenItStartsAndOnceWhenItEnds(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.InfoLevel)
	var out outage
	for range 3 {
		out.failed(log, errors.New("connection refused"))
	}
	if got := levels(t, &buf); got["warn"] != 1 || len(got) != 1 {
		t.Errorf("three failures logged %v, want one warn line", got)
	}
	buf.Reset()
	out.recovered(log)
	out.recovered(log) // nothing more to report
	if got := levels(t, &buf); got["info"] != 1 || len(got) != 1 {
		t.Errorf("recovery logged %v, want one info line", got)
	}
	buf.Reset()
	out.failed(log, errors.New("connection refused"))
	if got := levels(t, &buf); got["warn"] != 1 || len(got) != 1 {
		t.Errorf("a new outage logged %v, want one warn line", got)
	}
}

func TestOutageBackoffGrowsToACap(t *testing.T) {
	t.Parallel()
	const initial, limit = 100 * time.Millisecond, 5 * time.Second
	var out outage
	if d := out.backoff(); d != initial {
		t.Fatalf("backoff before any failure %v, want %v", d, initial)
	}
	prev := out.backoff()
	for attempt := 1; attempt <= 20; attempt++ {
		out.failed(zerolog.Nop(), errors.New("down"))
		d := out.backoff()
		if d > limit || (d <= prev && prev < limit) || (prev == limit && d != limit) {
			t.Fatalf("backoff after %d failures %v, after %v before: want growth up to %v, then %v", attempt, d, prev, limit, limit)
		}
		prev = d
	}
	if prev != limit {
		t.Errorf("backoff after 20 failures %v, want the cap %v", prev, limit)
	}
	out.recovered(zerolog.Nop())
	if d := out.backoff(); d != initial {
		t.Errorf("backoff after recovery %v, want %v again", d, initial)
	}
}
