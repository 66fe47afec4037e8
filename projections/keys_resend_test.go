package projections_test

import (
	"slices"
	"testing"
	"time"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// TestKeyStageReportsHowLateDuplicatesWereStored: of the repeats the key
// stage finds, the exact duplicates come back with the time between their
// original's and their own stream timestamps; reused keys are no re-sends.
// The original of seq 2 is stored in the same batch (split after 3) or in
// an earlier one (after 1), which the stage finds only once it reads the
// stored keys.
func TestKeyStageReportsHowLateDuplicatesWereStored(t *testing.T) {
	t.Parallel()
	keys := projections.EventKeys
	keys.KeyRetention = 7 * 24 * time.Hour
	history := keyHistory()
	for _, split := range []int{3, 1} {
		pool := testenv.NewMigratedPool(t)
		got := applyIn(t, pool, keys, keys.Name, history[:split]).ResendDelays
		got = append(got, applyIn(t, pool, keys, keys.Name, history[split:]).ResendDelays...)
		if want := []time.Duration{time.Hour, 24 * time.Hour}; !slices.Equal(got, want) {
			t.Errorf("batches split after %d: resend delays %v, want %v (seq 2 after 1, seq 5 after 4)", split, got, want)
		}
	}
}
