package domain

import (
	"cmp"
	"slices"
	"time"
)

// Recorded is an event with its place in the event log: its stream
// sequence, the only position taskledger knows, and its dedup key.
type Recorded struct {
	Seq      uint64
	DedupKey string
	Event
}

// Completion is one completion of a task as the read models hold it.
type Completion struct {
	TaskID      string
	CompletedAt time.Time
	Seq         uint64
	ProcessID   string
	CompletedBy string
	Source      string
	DedupKey    string
}

// CompletionOf returns the completion r records; ok is false for events
// that are not completions.
func CompletionOf(r Recorded) (c Completion, ok bool) {
	if !r.IsCompletion() {
		return Completion{}, false
	}
	return Completion{
		TaskID: r.TaskID, CompletedAt: r.OccurredAt, Seq: r.Seq, ProcessID: r.ProcessID,
		CompletedBy: r.CompletedBy, Source: r.Source, DedupKey: r.DedupKey,
	}, true
}

// Position orders two facts about one task: by time, then by stream
// sequence, so that ties resolve the same way whatever the arrival order.
type Position struct {
	At  time.Time
	Seq uint64
}

// Before reports whether p sorts strictly before q.
func (p Position) Before(q Position) bool {
	if !p.At.Equal(q.At) {
		return p.At.Before(q.At)
	}
	return p.Seq < q.Seq
}

// IsZero reports whether p is no position at all.
func (p Position) IsZero() bool { return p.Seq == 0 && p.At.IsZero() }

// Keep returns what policy p holds of the completions cs, ordered by task
// then completed_at:
//   - all: one completion per (task, completed_at), the lowest sequence;
//   - first: per task, the minimum (completed_at, seq);
//   - latest: per task, the maximum (completed_at, seq).
//
// Keep is order-independent and Keep(p, Keep(p, a) ++ b) equals
// Keep(p, a ++ b): that is what lets the read models be batched upserts.
func Keep(p Policy, cs []Completion) []Completion {
	type slotOf struct {
		task    string
		sec     int64 // the completion time, for PolicyAll
		nanosec int
	}
	kept := make(map[slotOf]Completion, len(cs))
	for _, c := range cs {
		slot := slotOf{task: c.TaskID}
		if p == PolicyAll {
			slot.sec, slot.nanosec = c.CompletedAt.Unix(), c.CompletedAt.Nanosecond()
		}
		old, seen := kept[slot]
		pos, oldPos := Position{c.CompletedAt, c.Seq}, Position{old.CompletedAt, old.Seq}
		if !seen || (p == PolicyLatest && oldPos.Before(pos)) || (p != PolicyLatest && pos.Before(oldPos)) {
			kept[slot] = c
		}
	}
	out := make([]Completion, 0, len(kept))
	for _, c := range kept {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Completion) int {
		return cmp.Or(cmp.Compare(a.TaskID, b.TaskID), a.CompletedAt.Compare(b.CompletedAt))
	})
	return out
}

// TaskState is what is known of a task besides its completions: its latest
// completion and latest reopen, whichever policy is read.
type TaskState struct {
	TaskID        string
	LastCompleted Position // zero when never completed
	LastReopened  Position // zero when never reopened
}

// Reopened reports whether the task was reopened after its latest
// completion (or reopened and never completed).
func (s TaskState) Reopened() bool {
	return !s.LastReopened.IsZero() && s.LastCompleted.Before(s.LastReopened)
}

// FoldStates merges the completions and reopens in rs into one state per
// task, keeping the latest of each; other events are ignored. The result is
// ordered by task and independent of the order of rs.
func FoldStates(rs []Recorded) []TaskState {
	states := make(map[string]TaskState, len(rs))
	for _, r := range rs {
		if !r.IsCompletion() && !r.IsReopen() {
			continue
		}
		s := states[r.TaskID]
		s.TaskID = r.TaskID
		pos := Position{r.OccurredAt, r.Seq}
		if r.IsCompletion() && s.LastCompleted.Before(pos) {
			s.LastCompleted = pos
		}
		if r.IsReopen() && s.LastReopened.Before(pos) {
			s.LastReopened = pos
		}
		states[r.TaskID] = s
	}
	out := make([]TaskState, 0, len(states))
	for _, s := range states {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b TaskState) int { return cmp.Compare(a.TaskID, b.TaskID) })
	return out
}
