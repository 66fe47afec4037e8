package consumers

import (
	"context"
	"testing"
	"time"
)

// TestDrainContextOutlivesShutdownBriefly: a batch's context survives the
// end of Run's context, so the batch commits, but only for the drain
// timeout; and releasing it early ends it.
func TestDrainContextOutlivesShutdownBriefly(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	drain, release := drainContext(ctx, 50*time.Millisecond)
	defer release()
	stop()
	if drain.Err() != nil {
		t.Fatal("the drain context ended with its parent")
	}
	select {
	case <-drain.Done():
	case <-time.After(time.Minute):
		t.Fatal("the drain context outlived its timeout")
	}

	other, release := drainContext(context.Background(), time.Hour)
	release()
	if other.Err() == nil {
		t.Error("release did not end the drain context")
	}
}
