package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/loadgen"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/projections"
)

// bench runs a self-contained load test: a private database
// (<database>_bench on the configured server), a private stream (on an
// embedded server in a temporary directory unless a NATS URL is given),
// realistic webhook traffic over HTTP, and the raw ceilings of JetStream
// and Postgres measured in the same run.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var events, senders int
	var rebuild bool
	cmd := command{name: "bench", about: "Load test: a private database and stream, realistic traffic over HTTP, and raw ceilings.",
		settings: []string{"database-url", "nats-url", "nats-sync", "batch-size", "max-body-bytes"}}
	cfg, positional, err := load(cmd, args, stdout, func(fs *flag.FlagSet) {
		fs.IntVar(&events, "events", 20_000, "webhooks to send")
		fs.IntVar(&senders, "concurrency", 16, "concurrent senders")
		fs.BoolVar(&rebuild, "rebuild", false, "then rebuild completions_all from the stream while the live projections run")
	})
	if err != nil {
		return err
	}
	if len(positional) > 0 || events < 1 || senders < 1 {
		return errors.New("usage: taskledger bench [--events N] [--concurrency C] [--rebuild] (N and C positive)")
	}
	cfg, cleanup, err := benchConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer cleanup()
	log := newLogger("error", stderr)
	svc, err := service.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeWithin(svc, cfg.ShutdownTimeout)
	traffic := loadgen.Generate(events, uint64(time.Now().UnixNano()))
	fmt.Fprintf(stdout, "taskledger bench: %d webhooks (%d tasks, with retries, reopens and late arrivals), %d senders, NATS sync %s\n\n",
		events, len(traffic.Tasks), senders, syncLabel(cfg))

	publish, err := publishCeiling(ctx, svc.JetStream(), cfg, traffic.Bodies, senders)
	if err != nil {
		return err
	}
	copyRate, err := loadgen.CopyCeiling(ctx, svc.Pool(), events)
	if err != nil {
		return err
	}

	svc.Start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: svc.Handler()}
	go srv.Serve(ln)                               //nolint:errcheck // ends with Shutdown below
	defer srv.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // best effort
	ingest, err := ingestLoad(ctx, svc, "http://"+ln.Addr().String(), traffic.Bodies, senders)
	if err != nil {
		return err
	}

	var rebuilt float64
	if rebuild {
		if rebuilt, err = timeRebuild(ctx, svc); err != nil {
			return err
		}
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tthroughput\tof its ceiling\tp50\tp99\t")
	fmt.Fprintf(tw, "JetStream publish, raw (ceiling)\t%.0f msg/s\t\t%s\t%s\t\n", publish.rate, ms(publish.latency.Percentile(50)), ms(publish.latency.Percentile(99)))
	fmt.Fprintf(tw, "Postgres COPY, raw (ceiling)\t%.0f rows/s\t\t\t\t\n", copyRate)
	fmt.Fprintf(tw, "Webhook ingest over HTTP\t%.0f req/s\t%.2fx publish\t%s\t%s\t\n", ingest.rate.rate, ingest.rate.rate/publish.rate,
		ms(ingest.latency.Percentile(50)), ms(ingest.latency.Percentile(99)))
	fmt.Fprintf(tw, "Projections, each of 3 policies\t%.0f events/s\t%.2fx COPY\t\t\t\n", ingest.projectedRate, ingest.projectedRate/copyRate)
	if rebuild {
		fmt.Fprintf(tw, "Rebuild of completions_all\t%.0f events/s\t%.2fx COPY\t\t\t\n", rebuilt, rebuilt/copyRate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ningest: %d accepted (202), %d duplicates (200), %d other\n", ingest.accepted, ingest.duplicates, ingest.other)
	fmt.Fprintf(stdout, "projection lag: at most %d events during the load; caught up %s after the last request\n",
		ingest.maxLag, ingest.drain.Round(time.Millisecond))
	if ingest.other > 0 {
		return fmt.Errorf("%d requests were not answered 202 or 200", ingest.other)
	}
	return nil
}

// timeRebuild rebuilds completions_all from the whole stream, the live
// projections running meanwhile, and returns events replayed per second.
func timeRebuild(ctx context.Context, svc *service.Service) (float64, error) {
	rb, err := svc.Rebuilder().Start(ctx, projections.ForPolicy(domain.PolicyAll))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var applied uint64
	if err := rb.Run(ctx, func(p consumers.Progress) { applied = p.Applied }); err != nil {
		return 0, err
	}
	return float64(applied) / time.Since(start).Seconds(), nil
}

// benchConfig points cfg at a fresh database named after the configured
// one with _bench appended (taskledger_bench by default) and a private
// stream; cleanup drops what it made.
func benchConfig(ctx context.Context, cfg config.Config) (config.Config, func(), error) {
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		return cfg, nil, err
	}
	admin := *u
	admin.Path = "/postgres"
	name := strings.TrimPrefix(u.Path, "/") + "_bench"
	u.Path = "/" + name
	cfg.DatabaseURL = u.String()
	drop := func() error {
		conn, err := pgx.Connect(context.WithoutCancel(ctx), admin.String())
		if err != nil {
			return fmt.Errorf("connect to Postgres to reset the bench database: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		_, err = conn.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	}
	if err := drop(); err != nil {
		return cfg, nil, err
	}
	cfg.Stream, cfg.SubjectPrefix = "TASKLEDGER_BENCH", "taskledger.bench"
	cfg.EmbeddedNATSAddr = netip.AddrPort{}
	dir := ""
	if cfg.NATSURL == "" {
		if dir, err = os.MkdirTemp("", "taskledger-bench-"); err != nil {
			return cfg, nil, err
		}
		cfg.DataDir = dir
	}
	return cfg, func() {
		_ = drop()
		if dir != "" {
			os.RemoveAll(dir)
		}
	}, nil
}

func syncLabel(cfg config.Config) string {
	if cfg.NATSURL != "" {
		return "(external server)"
	}
	return cfg.NATSSync.String()
}

type rate struct {
	rate    float64
	latency loadgen.Latencies
}

// publishCeiling publishes the bodies, as ingest would, straight into a
// scratch stream configured like the event stream, from senders concurrent
// publishers waiting for each acknowledgement.
func publishCeiling(ctx context.Context, js jetstream.JetStream, cfg config.Config, bodies []string, senders int) (rate, error) {
	scratch := eventlog.StreamConfig{Name: "TASKLEDGER_BENCH_CEILING", SubjectPrefix: "taskledger.bench-ceiling",
		DuplicateWindow: cfg.DuplicateWindow, Replicas: cfg.StreamReplicas}
	if _, err := eventlog.EnsureStream(ctx, js, scratch); err != nil {
		return rate{}, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), scratch.Name) //nolint:errcheck // best effort
	msgs := make([]eventlog.Record, 0, len(bodies))
	for _, body := range bodies {
		rec, err := eventlog.NewRecord("bench", []byte(body), time.Now())
		if err != nil {
			return rate{}, err
		}
		msgs = append(msgs, rec)
	}
	var publishErr error
	var mu sync.Mutex
	r, latencies := timeConcurrently(len(msgs), senders, func(i int) {
		if _, err := js.PublishMsg(ctx, msgs[i].Message(scratch.Subject("bench"))); err != nil {
			mu.Lock()
			publishErr = err
			mu.Unlock()
		}
	})
	return rate{rate: r, latency: latencies}, publishErr
}

type ingestResult struct {
	rate
	accepted, duplicates, other int64
	projectedRate               float64
	maxLag                      uint64
	drain                       time.Duration
}

// ingestLoad posts the bodies over HTTP while sampling projection lag, then
// waits for the projections to catch up.
func ingestLoad(ctx context.Context, svc *service.Service, base string, bodies []string, senders int) (ingestResult, error) {
	var res ingestResult
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var maxLag atomic.Uint64
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if lag, err := projectionLag(ctx, svc); err == nil && lag > maxLag.Load() {
				maxLag.Store(lag)
			}
			select {
			case <-sampling.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	res.rate.rate, res.latency = timeConcurrently(len(bodies), senders, func(i int) {
		resp, err := client.Post(base+"/v1/webhooks/bench", "application/json", bytes.NewBufferString(bodies[i]))
		if err != nil {
			atomic.AddInt64(&res.other, 1)
			return
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // draining for reuse
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			atomic.AddInt64(&res.accepted, 1)
		case http.StatusOK:
			atomic.AddInt64(&res.duplicates, 1)
		default:
			atomic.AddInt64(&res.other, 1)
		}
	})
	loadDone := time.Now()
	stopSampling()
	<-sampled
	for {
		lag, err := projectionLag(ctx, svc)
		if err != nil {
			return res, err
		}
		if lag == 0 {
			break
		}
		if time.Since(loadDone) > 5*time.Minute {
			return res, fmt.Errorf("projections still %d events behind 5 minutes after the load", lag)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.drain = time.Since(loadDone)
	res.maxLag = maxLag.Load()
	res.projectedRate = float64(res.accepted) / time.Since(start).Seconds()
	return res, nil
}

// projectionLag is how far the slowest projection is behind the stream.
func projectionLag(ctx context.Context, svc *service.Service) (uint64, error) {
	last, err := svc.StreamLastSeq(ctx)
	if err != nil {
		return 0, err
	}
	var lag uint64
	for _, p := range projections.Every {
		cp, err := projections.Checkpoint(ctx, svc.Pool(), p.Name)
		if err != nil {
			return 0, err
		}
		lag = max(lag, last-min(cp, last))
	}
	return lag, nil
}

// timeConcurrently runs do(0..n-1) on workers goroutines and returns calls
// per second and each call's duration.
func timeConcurrently(n, workers int, do func(i int)) (float64, loadgen.Latencies) {
	latencies := make(loadgen.Latencies, n)
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
	return float64(n) / time.Since(start).Seconds(), latencies
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
