package consumers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// aheadPosition reports a stream end one event past the real one: the
// position a consumer sees when its reader stopped delivering without
// noticing (its server-side consumer gone), so idle passes find events
// the reader never hands over.
type aheadPosition struct{ eventlog.Position }

func (p aheadPosition) LastSeq(ctx context.Context) (uint64, error) {
	last, err := p.Position.LastSeq(ctx)
	return last + 1, err
}

// A reader that keeps stalling is read again and again from the
// checkpoint, and after a few rounds the consumer shows as stalled with
// why, rather than resetting its count at every idle pass.
func TestAReaderThatKeepsStallingShowsAsStalled(t *testing.T) {
	t.Parallel()
	s := newTestStream(t)
	s.publish(t, `{"event":"task.completed","task_id":"t1","completed_at":"2024-01-15T10:30:00Z"}`)
	opts := s.opts
	opts.Position = aheadPosition{eventlog.NewPosition(s.js, s.cfg)}
	keys := projections.Group{Name: projections.EventKeys.Name, Stages: []projections.Projection{projections.EventKeys}}
	c := New(keys, s.pool, s.js, opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Go(func() { c.Run(ctx) })
	defer running.Wait()
	defer cancel()
	testenv.Poll(t, 30*time.Second, "the consumer to show as stalled", func() bool { return c.Stalled(keys.Name) != nil })
	if st := c.Stalled(keys.Name); !strings.Contains(st.Reason, "stream reader stalled") || st.Attempts < stallAfter {
		t.Errorf("stalled with %+v, want the reader's stall after %d attempts", st, stallAfter)
	}
}
