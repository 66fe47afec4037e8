package main

import (
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
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

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
		fs.BoolVar(&rebuild, "rebuild", false, "also rebuild completions_all, started once half the webhooks are stored: it replays under the load and must catch up with it to swap")
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

	publish, err := loadgen.PublishCeiling(ctx, svc.JetStream(), eventlog.StreamConfig{DuplicateWindow: cfg.DuplicateWindow,
		Replicas: cfg.StreamReplicas}, traffic.Bodies, senders, svc.GroupSyncDir())
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
	var rebuilt rebuildRun
	rebuildDone := make(chan error, 1)
	if rebuild {
		go func() {
			var err error
			if err = waitStored(ctx, svc, uint64(len(traffic.Bodies)/2)); err == nil {
				rebuilt, err = timeRebuild(ctx, svc)
			}
			rebuildDone <- err
		}()
	}
	ingest, err := loadgen.Send(ctx, "http://"+ln.Addr().String()+"/v1/webhooks/bench", traffic.Bodies, senders, svc.Lag)
	if err != nil {
		return err
	}
	sent := time.Now()
	if rebuild {
		if err := <-rebuildDone; err != nil {
			return err
		}
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tthroughput\tof its ceiling\tp50\tp99\t")
	publishLabel := "JetStream publish, raw (ceiling)"
	if svc.GroupSyncDir() != "" {
		publishLabel = "JetStream publish + group fsync, raw (ceiling)"
	}
	fmt.Fprintf(tw, "%s\t%.0f msg/s\t\t%s\t%s\t\n", publishLabel, publish.PerSecond, ms(publish.Latency.Percentile(50)), ms(publish.Latency.Percentile(99)))
	fmt.Fprintf(tw, "Postgres COPY, raw (ceiling)\t%.0f rows/s\t\t\t\t\n", copyRate)
	fmt.Fprintf(tw, "Webhook ingest over HTTP\t%.0f req/s\t%.2fx publish\t%s\t%s\t\n", ingest.PerSecond, ingest.PerSecond/publish.PerSecond,
		ms(ingest.Latency.Percentile(50)), ms(ingest.Latency.Percentile(99)))
	fmt.Fprintf(tw, "Projections, each of 3 policies\t%.0f events/s\t%.2fx COPY\t\t\t\n", ingest.ProjectedRate, ingest.ProjectedRate/copyRate)
	if rebuild {
		fmt.Fprintf(tw, "Rebuild of completions_all\t%.0f events/s\t%.2fx COPY\t\t\t\n", rebuilt.perSecond, rebuilt.perSecond/copyRate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ningest: %d accepted (202), %d duplicates (200), %d other\n", ingest.Accepted, ingest.Duplicates, ingest.Other)
	fmt.Fprintf(stdout, "projection lag: at most %d events during the load; caught up %s after the last request\n",
		ingest.MaxLag, ingest.CaughtUpAfter.Round(time.Millisecond))
	if rebuild {
		when := "while the load still ran"
		if rebuilt.swapped.After(sent) {
			when = fmt.Sprintf("%s after the last request", rebuilt.swapped.Sub(sent).Round(time.Millisecond))
		}
		fmt.Fprintf(stdout, "rebuild: started with %d events stored, replayed %d and swapped in %s, %s\n",
			rebuilt.startedAt, rebuilt.applied, rebuilt.took.Round(time.Millisecond), when)
	}
	if ingest.Other > 0 {
		return fmt.Errorf("%d requests were not answered 202 or 200", ingest.Other)
	}
	return nil
}

// rebuildRun is what timeRebuild measured.
type rebuildRun struct {
	startedAt, applied uint64 // the stream's last sequence at the start; events replayed
	took               time.Duration
	swapped            time.Time
	perSecond          float64
}

// timeRebuild rebuilds completions_all from the whole stream, the live
// projections running meanwhile, until it is swapped in.
func timeRebuild(ctx context.Context, svc *service.Service) (rebuildRun, error) {
	var run rebuildRun
	var err error
	if run.startedAt, err = svc.StreamLastSeq(ctx); err != nil {
		return run, err
	}
	rb, err := svc.Rebuilder().Start(ctx, projections.ForPolicy(domain.PolicyAll))
	if err != nil {
		return run, err
	}
	start := time.Now()
	if err := rb.Run(ctx, func(p consumers.Progress) { run.applied = p.Applied }); err != nil {
		return run, err
	}
	run.swapped = time.Now()
	run.took = run.swapped.Sub(start)
	run.perSecond = float64(run.applied) / run.took.Seconds()
	return run, nil
}

// waitStored waits until the stream holds at least n events.
func waitStored(ctx context.Context, svc *service.Service, n uint64) error {
	for {
		last, err := svc.StreamLastSeq(ctx)
		if err != nil || last >= n {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
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

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
