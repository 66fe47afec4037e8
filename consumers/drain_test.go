package consumers

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/projections"
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

// TestZeroOptionsTakeDefaults: zero bounds and waits would make a reader
// return empty batches at once, and a standby poll without a pause.
func TestZeroOptionsTakeDefaults(t *testing.T) {
	t.Parallel()
	c := New(projections.Groups(1)[0], nil, nil, Options{ReadOptions: ReadOptions{Stream: "S"}}, zerolog.Nop())
	if o := c.opts; o.StandbyPoll <= 0 || o.MaxCount <= 0 || o.MaxBytes <= 0 || o.Wait <= 0 || o.Linger <= 0 || o.Position == nil {
		t.Errorf("zero options kept: %+v", o)
	}
	if _, err := c.opts.Position.PartitionLastSeq(context.Background(), 0); err == nil {
		t.Error("the default position claims to know partitions")
	}
	if _, err := OpenReader(context.Background(), nil, ReadOptions{}, 1); err == nil {
		t.Error("OpenReader without a stream name")
	}
}
