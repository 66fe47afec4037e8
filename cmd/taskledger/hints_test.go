package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/projections"
)

// TestHintsOfTypedErrors: the errors that carry facts get the settings and
// commands that act on them, however deeply they are wrapped.
func TestHintsOfTypedErrors(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"another stream", &projections.StreamMismatchError{
			Recorded: projections.StreamIdentity{Name: "TASK_EVENTS", Created: created},
			Current:  projections.StreamIdentity{Name: "TASK_EVENTS", Created: created.Add(time.Hour)}, Checkpoint: 7},
			[]string{"the database follows stream TASK_EVENTS created 2026-01-02T03:04:05Z (checkpoints up to 7)",
				"the stream here is TASK_EVENTS created 2026-01-02T04:04:05Z (last sequence 0)",
				"hint: ", "TASKLEDGER_NATS_URL (--nats-url)", "TASKLEDGER_DATA_DIR (--data-dir)", "TASKLEDGER_STREAM (--stream)",
				"stop every taskledger serve on this database and run `taskledger replay --adopt-stream`"}},
		{"no stream", &projections.StreamMismatchError{
			Recorded: projections.StreamIdentity{Name: "TASK_EVENTS", Created: created},
			Current:  projections.StreamIdentity{Name: "TASK_EVENTS"}, Checkpoint: 7},
			[]string{"but there is no stream TASK_EVENTS here", "`taskledger replay --adopt-stream`"}},
		{"stream partitions", &eventlog.PartitionsChangedError{Stream: "TASK_EVENTS", Stored: 1, Configured: 4},
			[]string{"stream TASK_EVENTS holds events in 1 partition(s), and 4 are configured", "TASKLEDGER_PARTITIONS (--partitions)",
				"stop every replica, then run `taskledger replay --all` with TASKLEDGER_PARTITIONS=4"}},
		{"projection partitions", &projections.PartitionsChangedError{Projection: "completions_all", Kept: 2, Configured: 3},
			[]string{"completions_all has 2 partition(s) and 3 are configured", "`taskledger replay --all` with TASKLEDGER_PARTITIONS=3"}},
		{"no JetStream", fmt.Errorf("create or update stream TASK_EVENTS: %w", eventlog.ErrNoJetStream),
			[]string{"does not run JetStream", "`nats-server -js`", "TASKLEDGER_NATS_URL (--nats-url) empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := withHint(fmt.Errorf("open: %w", tt.err)).Error()
			for _, want := range tt.want {
				if !strings.Contains(got, want) {
					t.Errorf("%q lacks %q", got, want)
				}
			}
		})
	}
}
