// Package loadgen makes realistic webhook traffic for tests and benchmarks:
// completions over many tasks, sender retries (exact repeats), reopens, and
// completions whose times arrive out of order.
package loadgen

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Traffic is a sequence of webhook bodies and the tasks they touch.
type Traffic struct {
	Bodies []string
	Tasks  []string
}

// Generate makes n bodies, deterministic for a seed: about 10% are repeats
// of an earlier body, 10% reopens, the rest completions at random times
// over a month, spread over n/8 tasks in 10 processes.
func Generate(n int, seed uint64) Traffic {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var t Traffic
	for i := range max(n/8, 1) {
		t.Tasks = append(t.Tasks, fmt.Sprintf("task-%06d", i))
	}
	for len(t.Bodies) < n {
		task := t.Tasks[rng.IntN(len(t.Tasks))]
		at := base.Add(time.Duration(rng.IntN(30*24*3600)) * time.Second).Format(time.RFC3339)
		switch r := rng.IntN(10); {
		case r == 0 && len(t.Bodies) > 0:
			t.Bodies = append(t.Bodies, t.Bodies[rng.IntN(len(t.Bodies))])
		case r == 1:
			t.Bodies = append(t.Bodies, fmt.Sprintf(`{"event":"task.reopened","task_id":%q,"reopened_at":%q}`, task, at))
		default:
			t.Bodies = append(t.Bodies, fmt.Sprintf(`{"event":"task.completed","task_id":%q,"process_id":"process-%s",`+
				`"completed_at":%q,"completed_by":"user%d@example.com"}`, task, task[len(task)-1:], at, rng.IntN(50)))
		}
	}
	return t
}
