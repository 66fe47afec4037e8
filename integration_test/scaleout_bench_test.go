package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/loadgen"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// BenchmarkProjectionScaleOut measures how fast every projection
// apply a backlog of TASKLEDGER_BENCH_EVENTS webhook events, with one or
// two replicas and one or four partitions: the events are stored first,
// then the replicas' consumers start, and the clock runs until every
// projection's checkpoint reaches the stream's end.
func BenchmarkProjectionScaleOut(b *testing.B) {
	n := benchEventCount(b)
	traffic := loadgen.Generate(n, 42)
	for _, partitions := range []int{1, 4} {
		for _, replicas := range []int{1, 2} {
			b.Run(fmt.Sprintf("partitions=%d/replicas=%d", partitions, replicas), func(b *testing.B) {
				var elapsed time.Duration
				var stored uint64
				for range b.N {
					b.StopTimer()
					first := setup(b, func(c *config.Config) { c.Partitions = partitions })
					stored = first.storeBacklog(b, traffic.Bodies)
					bundles := []*bundle{first}
					for len(bundles) < replicas {
						bundles = append(bundles, first.replica(b))
					}
					b.StartTimer()
					start := time.Now()
					for _, r := range bundles {
						r.svc.Start()
					}
					testenv.Poll(b, 10*time.Minute, "every projection to apply the backlog", func() bool {
						return first.applied(b, stored)
					})
					elapsed += time.Since(start)
					b.StopTimer()
					for _, r := range bundles {
						r.svc.Close(context.Background())
					}
				}
				b.ReportMetric(float64(stored)*float64(b.N)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(len(projections.Every))*float64(stored)*float64(b.N)/elapsed.Seconds(), "applied/s")
			})
		}
	}
}

// storeBacklog publishes bodies to the stream as ingest would, on their
// partitions' subjects, as fast as JetStream takes them, and returns the
// stream's last sequence.
func (b *bundle) storeBacklog(tb testing.TB, bodies []string) uint64 {
	tb.Helper()
	streamCfg := eventlog.StreamConfig{SubjectPrefix: b.cfg.SubjectPrefix, Partitions: b.cfg.Partitions}
	for _, body := range bodies {
		rec, err := eventlog.NewRecord("bench", []byte(body), time.Now())
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := b.js.PublishMsgAsync(rec.Message(streamCfg.Subject(rec.Source, rec.TaskID))); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		tb.Fatal("publishes not acknowledged")
	}
	return b.lastSeq(tb)
}
