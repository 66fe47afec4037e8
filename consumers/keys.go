package consumers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskledger/taskledger/projections"
)

// ErrKeysBehind says a rebuild, or a live consumer, waited keysPatience
// in vain for the key stage to move.
var ErrKeysBehind = errors.New("the key stage (" + projections.EventKeys.Name + ") is not following the stream: " +
	"run taskledger serve, or rebuild " + projections.EventKeys.Name + " first")

// waitForKeys waits until the key stage has applied the stream through seq:
// a policy applies an event only once the key stage has recorded whether
// it repeats an earlier one. It polls with a pause that grows from a
// millisecond, so a policy follows the key stage closely under load and
// costs little while idle. With patience set, it gives up with
// ErrKeysBehind once the key stage has not moved for that long.
func waitForKeys(ctx context.Context, db projections.DB, seq uint64, patience time.Duration) error {
	pause, last, since := time.Millisecond, uint64(0), time.Now()
	for {
		cp, err := projections.Checkpoint(ctx, db, projections.EventKeys.Name)
		if err != nil || cp >= seq {
			return err
		}
		if cp != last {
			last, since = cp, time.Now()
		} else if patience > 0 && time.Since(since) > patience {
			return fmt.Errorf("%w (it is at %d, the next batch needs %d)", ErrKeysBehind, cp, seq)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}
