package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/eventlog"
)

// Rate is calls per second, with each call's duration.
type Rate struct {
	PerSecond float64
	Latency   Latencies
}

// TimeConcurrently runs do(0..n-1) on workers goroutines.
func TimeConcurrently(n, workers int, do func(i int)) Rate {
	latencies := make(Latencies, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				do(i)
				latencies[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	return Rate{PerSecond: float64(n) / time.Since(start).Seconds(), Latency: latencies}
}

// PublishCeiling publishes the bodies, as ingest would, straight into a
// scratch stream configured like like (name and subjects aside), from
// senders concurrent publishers each waiting for its acknowledgement. With
// syncStoreDir (an embedded server's store whose appends ingest puts on
// disk, see eventlog.GroupSync) each publisher also waits for that, as
// ingest does.
func PublishCeiling(ctx context.Context, js jetstream.JetStream, like eventlog.StreamConfig, bodies []string, senders int, syncStoreDir string) (Rate, error) {
	scratch := like
	scratch.Name, scratch.SubjectPrefix = "TASKLEDGER_BENCH_CEILING", "taskledger.bench-ceiling"
	if _, err := eventlog.EnsureStream(ctx, js, scratch); err != nil {
		return Rate{}, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), scratch.Name) //nolint:errcheck // best effort
	durable := func() error { return nil }
	if syncStoreDir != "" {
		g, err := eventlog.NewGroupSync(syncStoreDir, scratch.Name)
		if err != nil {
			return Rate{}, err
		}
		defer g.Close()
		durable = func() error { return g.Sync(ctx) }
	}
	msgs := make([]eventlog.Record, 0, len(bodies))
	for _, body := range bodies {
		rec, err := eventlog.NewRecord("bench", []byte(body), time.Now())
		if err != nil {
			return Rate{}, err
		}
		msgs = append(msgs, rec)
	}
	var publishErr error
	var mu sync.Mutex
	r := TimeConcurrently(len(msgs), senders, func(i int) {
		_, err := js.PublishMsg(ctx, msgs[i].Message(scratch.Subject("bench", msgs[i].TaskID)))
		if err == nil {
			err = durable()
		}
		if err != nil {
			mu.Lock()
			publishErr = err
			mu.Unlock()
		}
	})
	return r, publishErr
}

// Lag tells how many events the slowest projection is behind the stream.
type Lag func(context.Context) (uint64, error)

// WaitCaughtUp polls lag until it is zero, and returns how long that took;
// an error when it is not within limit.
func WaitCaughtUp(ctx context.Context, lag Lag, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		behind, err := lag(ctx)
		if err != nil {
			return 0, err
		}
		if behind == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("projections still %d events behind after %v", behind, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Sent is what Send measured.
type Sent struct {
	Rate                        // webhook requests
	Accepted, Duplicates, Other int64
	ProjectedRate               float64       // events projected per second, from the first request to caught up
	MaxLag                      uint64        // the most events the projections were behind while sending
	CaughtUpAfter               time.Duration // from the last answer to every projection caught up
}

// Send posts the bodies to url (a webhook endpoint) from senders
// concurrent clients while sampling lag, then waits for the projections to
// catch up (at most 5 minutes).
func Send(ctx context.Context, url string, bodies []string, senders int, lag Lag) (Sent, error) {
	var res Sent
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var maxLag atomic.Uint64
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if behind, err := lag(ctx); err == nil && behind > maxLag.Load() {
				maxLag.Store(behind)
			}
			select {
			case <-sampling.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	res.Rate = TimeConcurrently(len(bodies), senders, func(i int) {
		resp, err := client.Post(url, "application/json", bytes.NewBufferString(bodies[i]))
		if err != nil {
			atomic.AddInt64(&res.Other, 1)
			return
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // draining for reuse
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			atomic.AddInt64(&res.Accepted, 1)
		case http.StatusOK:
			atomic.AddInt64(&res.Duplicates, 1)
		default:
			atomic.AddInt64(&res.Other, 1)
		}
	})
	stopSampling()
	<-sampled
	drain, err := WaitCaughtUp(ctx, lag, 5*time.Minute)
	if err != nil {
		return res, err
	}
	res.CaughtUpAfter = drain
	res.MaxLag = maxLag.Load()
	res.ProjectedRate = float64(res.Accepted) / time.Since(start).Seconds()
	return res, nil
}
