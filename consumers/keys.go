package consumers

import (
	"context"
	"time"

	"github.com/taskledger/taskledger/projections"
)

// waitForKeys waits until the key stage has applied the stream through seq:
// a read model applies an event only once the key stage has recorded
// whether it repeats an earlier one. It polls with a pause that grows from
// a millisecond, so a read model follows the key stage closely under load
// and costs little while idle.
func waitForKeys(ctx context.Context, db projections.DB, seq uint64) error {
	pause := time.Millisecond
	for {
		cp, err := projections.Checkpoint(ctx, db, projections.EventKeys.Name)
		if err != nil || cp >= seq {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}
