package integration_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/loadgen"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// benchEventCount is TASKLEDGER_BENCH_EVENTS, default 20,000.
func benchEventCount(b *testing.B) int {
	n := 20_000
	if s := os.Getenv("TASKLEDGER_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("TASKLEDGER_BENCH_EVENTS=%q: want a positive number", s)
		}
	}
	return n
}

// BenchmarkRebuild measures how fast a projection is rebuilt from a stream
// of TASKLEDGER_BENCH_EVENTS webhook events while the live projections
// keep applying new events (liveRate a second), beside the ceilings of its two
// parts measured in the same run: JetStream publishing those events
// (asynchronously, as fast as the server takes them) and Postgres COPY of as
// many rows into a table shaped like the read model.
func BenchmarkRebuild(b *testing.B) {
	n := benchEventCount(b)
	bd := setup(b, nil)
	ctx := context.Background()
	traffic := loadgen.Generate(n, 42)

	start := time.Now()
	for _, body := range traffic.Bodies {
		rec, err := eventlog.NewRecord("bench", []byte(body), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bd.js.PublishMsgAsync(rec.Message(bd.env.SubjectPrefix+".bench"), jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-bd.js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	publishRate := float64(n) / time.Since(start).Seconds()
	stream, err := bd.js.Stream(ctx, bd.stream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	stored := info.State.Msgs

	copyRate, err := loadgen.CopyCeiling(ctx, bd.svc.Pool(), int(stored))
	if err != nil {
		b.Fatal(err)
	}

	p := projections.ForPolicy(domain.PolicyAll)
	rebuilder := consumers.NewRebuilder(bd.svc.Pool(), bd.js, consumers.ReadOptions{
		Stream: bd.stream, MaxCount: 5000, MaxBytes: 16 << 20,
		Wait: 200 * time.Millisecond, Linger: 5 * time.Millisecond,
	}, testLogger(b))
	bd.svc.Start()
	// The live projections apply the stored events first (not timed), then
	// new traffic while the rebuild runs.
	testenv.Poll(b, 10*time.Minute, "the live projections to apply the stored events", func() bool {
		return bd.applied(b, info.State.LastSeq)
	})
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	liveEvents := make(chan int, 1)
	go func() { liveEvents <- publishLive(trafficCtx, b, bd) }()
	b.ResetTimer()
	for b.Loop() {
		rb, err := rebuilder.Start(ctx, p)
		if err != nil {
			b.Fatal(err)
		}
		if err := rb.Run(ctx, func(consumers.Progress) {}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	stopTraffic()
	live := <-liveEvents
	if live == 0 {
		b.Fatal("no live traffic during the rebuild")
	}
	if info, err = stream.Info(ctx); err != nil {
		b.Fatal(err)
	}
	testenv.Poll(b, time.Minute, "the live projections to apply the new events", func() bool {
		return bd.applied(b, info.State.LastSeq)
	})
	// The figure counts only if the rebuild is whole: every stored key (in
	// the key stage the rebuild waited for), and every distinct completion,
	// once.
	completions := map[string]bool{}
	for _, body := range traffic.Bodies {
		if ev, err := domain.ParseEvent("bench", []byte(body)); err == nil && ev.Type == domain.TypeCompleted {
			completions[ev.TaskID+" "+ev.OccurredAt.UTC().Format(time.RFC3339Nano)] = true
		}
	}
	var keys, rows int
	if err := bd.svc.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM event_keys.keys),
		(SELECT count(*) FROM completions_all.completions)`).Scan(&keys, &rows); err != nil {
		b.Fatal(err)
	}
	if keys != int(info.State.Msgs) || rows != len(completions)+live {
		b.Fatalf("rebuilt completions_all holds %d keys and %d completions, want %d and %d", keys, rows, info.State.Msgs, len(completions)+live)
	}
	b.ReportMetric(float64(stored)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(copyRate, "copy-rows/s")
	b.ReportMetric(publishRate, "publish-msgs/s")
	b.ReportMetric(float64(stored), "events")
	b.ReportMetric(float64(info.State.Bytes)/float64(info.State.Msgs), "stream-bytes/event")
}

// liveRate is how many new events a second reach the live projections
// while BenchmarkRebuild rebuilds.
const liveRate = 500

// publishLive stores a completion of a new task liveRate times a second
// until ctx ends, and returns how many it stored.
func publishLive(ctx context.Context, b *testing.B, bd *bundle) int {
	tick := time.NewTicker(time.Second / liveRate)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		rec, err := eventlog.NewRecord("bench", []byte(completion(fmt.Sprintf("live-%d", n), "2024-01-15T10:30:00Z")), time.Now())
		if err == nil {
			_, err = bd.js.PublishMsg(context.WithoutCancel(ctx), rec.Message(bd.env.SubjectPrefix+".bench"))
		}
		if err != nil {
			b.Error(err)
			return n
		}
	}
}
