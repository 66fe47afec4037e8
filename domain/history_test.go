package domain

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// randomHistory makes completions and reopens of a few tasks with colliding
// times (to exercise tie-breaks) and distinct sequences.
func randomHistory(rng *rand.Rand, n int) []Recorded {
	base := time.Date(2024, 1, 15, 10, 0, 0, 0, time.UTC)
	out := make([]Recorded, n)
	for i := range out {
		typ := TypeCompleted
		if rng.IntN(4) == 0 {
			typ = TypeReopened
		}
		out[i] = Recorded{
			Seq:      uint64(i + 1),
			DedupKey: fmt.Sprintf("k%d", i),
			Event: Event{
				Source: "s", Type: typ, TaskID: fmt.Sprintf("t%d", rng.IntN(4)),
				ProcessID: "p", CompletedBy: fmt.Sprintf("u%d", i),
				OccurredAt: base.Add(time.Duration(rng.IntN(6)) * time.Hour),
			},
		}
	}
	return out
}

func completionsOf(rs []Recorded) []Completion {
	var cs []Completion
	for _, r := range rs {
		if c, ok := CompletionOf(r); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

// TestPoliciesIgnoreOrderAndDuplicates is the property behind the
// projections: any permutation of a history, with any events repeated,
// keeps the same completions and task states, and keeping in two batches
// equals keeping at once.
func TestPoliciesIgnoreOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		history := randomHistory(rng, 1+rng.IntN(20))
		shuffled := append([]Recorded(nil), history...)
		for range rng.IntN(10) {
			shuffled = append(shuffled, history[rng.IntN(len(history))])
		}
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		split := rng.IntN(len(shuffled) + 1)
		for _, p := range Policies {
			want := Keep(p, completionsOf(history))
			if got := Keep(p, completionsOf(shuffled)); !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d %s: permuted %v, want %v", trial, p, got, want)
			}
			batched := Keep(p, append(Keep(p, completionsOf(shuffled[:split])), completionsOf(shuffled[split:])...))
			if !reflect.DeepEqual(batched, want) {
				t.Fatalf("trial %d %s: batched %v, want %v", trial, p, batched, want)
			}
		}
		if got, want := FoldStates(shuffled), FoldStates(history); !reflect.DeepEqual(got, want) {
			t.Fatalf("trial %d: states %v, want %v", trial, got, want)
		}
	}
}

func TestKeepPolicies(t *testing.T) {
	t.Parallel()
	at := func(h int) time.Time { return time.Date(2024, 1, 15, h, 0, 0, 0, time.UTC) }
	cs := []Completion{
		{TaskID: "t", CompletedAt: at(12), Seq: 1},
		{TaskID: "t", CompletedAt: at(10), Seq: 2}, // late arrival, older
		{TaskID: "t", CompletedAt: at(12), Seq: 3}, // same time as seq 1
	}
	seqs := func(cs []Completion) (out []uint64) {
		for _, c := range cs {
			out = append(out, c.Seq)
		}
		return out
	}
	for p, want := range map[Policy][]uint64{PolicyAll: {2, 1}, PolicyFirst: {2}, PolicyLatest: {3}} {
		if got := seqs(Keep(p, cs)); !reflect.DeepEqual(got, want) {
			t.Errorf("%s keeps %v, want %v", p, got, want)
		}
	}
}

func TestReopened(t *testing.T) {
	t.Parallel()
	at := func(h int) time.Time { return time.Date(2024, 1, 15, h, 0, 0, 0, time.UTC) }
	rec := func(seq uint64, typ string, h int) Recorded {
		return Recorded{Seq: seq, Event: Event{Type: typ, TaskID: "t", OccurredAt: at(h)}}
	}
	tests := []struct {
		name string
		rs   []Recorded
		want bool
	}{
		{"completed", []Recorded{rec(1, TypeCompleted, 10)}, false},
		{"reopened after completion", []Recorded{rec(1, TypeCompleted, 10), rec(2, TypeReopened, 11)}, true},
		{"completed again", []Recorded{rec(1, TypeCompleted, 10), rec(2, TypeReopened, 11), rec(3, TypeCompleted, 12)}, false},
		{"late reopen of an old completion", []Recorded{rec(1, TypeCompleted, 12), rec(2, TypeReopened, 11)}, false},
		{"reopened, never completed", []Recorded{rec(1, TypeReopened, 11)}, true},
	}
	for _, tt := range tests {
		if got := FoldStates(tt.rs)[0].Reopened(); got != tt.want {
			t.Errorf("%s: Reopened() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
