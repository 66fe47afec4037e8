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
func TestKeyStageReportsHowLateDuplicatesWereStored(t *testing.T) {
	t.Parallel()
	pool := testenv.NewMigratedPool(t)
	keys := projections.EventKeys
	keys.KeyRetention = 7 * 24 * time.Hour
	history := keyHistory()

	got := applyIn(t, pool, keys, keys.Name, history[:3]).ResendDelays
	got = append(got, applyIn(t, pool, keys, keys.Name, history[3:]).ResendDelays...)
	if want := []time.Duration{time.Hour, 24 * time.Hour}; !slices.Equal(got, want) {
		t.Errorf("resend delays %v, want %v (seq 2 after 1, seq 5 after 4)", got, want)
	}
}
