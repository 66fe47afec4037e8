package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/projections"
)

// replay rebuilds one projection from the stream, blue/green, while any
// running service keeps serving the live tables; with --all, every
// projection, which is also how the partition count changes (the stream
// then records the configured count, and every projection is split into
// that many partitions); or, with --adopt-stream, every projection from a
// stream the database does not follow yet, which it then follows (with the
// embedded server, also from a data directory wiped of its stream: the
// stream then starts empty). Offline on a data directory that holds no
// stream, the other modes refuse and write nothing.
func replay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var name string
	var all, adopt bool
	cmd := command{name: "replay", about: "Rebuilds a projection from the stream, blue/green, while the service keeps serving; " +
		"with --all, every projection, taking the configured partitions; " +
		"with --adopt-stream, every projection from the stream configured, which the database then follows.",
		settings: []string{"database-url", "nats-url", "data-dir", "embedded-nats-addr", "stream", "subject-prefix", "batch-size", "partitions", "log-level"}}
	cfg, positional, err := load(cmd, args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&name, "projection", "", "projection to rebuild: "+projectionNames())
		fs.BoolVar(&all, "all", false, "rebuild every projection, split into the configured partitions "+
			"(stop every taskledger serve first when the partition count changes)")
		fs.BoolVar(&adopt, "adopt-stream", false, "rebuild every projection from the stream this configuration "+
			"reaches and make the database follow it (stop every taskledger serve on this database first)")
	})
	if err != nil {
		return err
	}
	proj, ok := projections.ByName(name)
	if btoi(ok)+btoi(all)+btoi(adopt) != 1 || len(positional) > 0 {
		return fmt.Errorf("usage: taskledger replay --projection NAME (one of %s), taskledger replay --all, "+
			"or taskledger replay --adopt-stream", projectionNames())
	}
	log := newLogger(cfg.LogLevel, stderr)
	var bar *progressLine
	if isTerminal(stderr) {
		// Log lines go above the progress bar instead of over it.
		bar = &progressLine{out: stderr}
		log = loggerTo(cfg.LogLevel, bar, true)
	}
	if cfg.NATSURL == "" && cfg.EmbeddedNATSAddr.IsValid() && answers(cfg.EmbeddedNATSAddr.String()) {
		// A running `taskledger serve` owns the embedded server: use it.
		creds, err := eventlog.ReadCredentials(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("a taskledger serve listens on %s, but its NATS credentials cannot be read: %w (run replay as its user, with its --data-dir)", cfg.EmbeddedNATSAddr, err)
		}
		cfg.NATSURL = creds.URL(cfg.EmbeddedNATSAddr.String())
	}
	if cfg.NATSURL == "" && !adopt && !service.HasStoredStream(cfg) {
		return missingStream(ctx, cfg)
	}
	var svc *service.Service
	switch {
	case adopt:
		svc, err = service.OpenToAdopt(ctx, cfg, log)
	case all:
		svc, err = service.Open(ctx, cfg, log, service.Repartition())
	default:
		svc, err = service.Open(ctx, cfg, log)
	}
	if err != nil {
		return err
	}
	defer closeWithin(svc, cfg.ShutdownTimeout)
	report := service.ProgressLogger(log, 5*time.Second)
	if bar != nil {
		report = func(p consumers.Progress) {
			bar.show(renderProgress(p, time.Now()))
			if p.Done {
				bar.finish(p.Projection + ": rebuilt and swapped in")
			}
		}
	}
	switch {
	case adopt:
		err = svc.AdoptStream(ctx, report)
	case all:
		for _, p := range projections.Every {
			if err = rebuild(ctx, svc, p, report); err != nil {
				break
			}
		}
	default:
		err = rebuild(ctx, svc, proj, report)
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("replay interrupted; the live tables are untouched and the next replay starts clean")
	}
	return err
}

// missingStream is why replay refuses a data directory that holds no
// stream, writing nothing into it: the stream the database follows is not
// there (a wiped data directory), or, when the database follows none yet,
// this is not where taskledger serve keeps its data.
func missingStream(ctx context.Context, cfg config.Config) error {
	pool, err := postgres.OpenMigrated(ctx, cfg.DatabaseURL)
	if err != nil && !errors.Is(err, postgres.ErrNotMigrated) {
		return err
	}
	if err == nil {
		defer pool.Close()
		mismatch, err := projections.MissingStream(ctx, pool, cfg.Stream)
		if err != nil {
			return err
		}
		if mismatch != nil {
			return fmt.Errorf("data directory %s: %w", cfg.DataDir, mismatch)
		}
	}
	return fmt.Errorf("data directory %s holds no stream %s: run replay where `taskledger serve` keeps its data "+
		"(TASKLEDGER_DATA_DIR, --data-dir), or while the service runs", cfg.DataDir, cfg.Stream)
}

// rebuild rebuilds proj. A policy needs the key stage ahead of it: with no
// service applying the key stage, it is rebuilt first, up to the stream's
// end.
func rebuild(ctx context.Context, svc *service.Service, proj projections.Projection, report func(consumers.Progress)) error {
	if proj.WaitsForKeys() {
		live, err := projections.ConsumerActive(ctx, svc.Pool(), projections.EventKeys.Name)
		if err != nil {
			return err
		}
		if !live {
			if err := rebuild(ctx, svc, projections.EventKeys, report); err != nil {
				return err
			}
		}
	}
	rb, err := svc.StartRebuild(ctx, proj)
	if err != nil {
		return err
	}
	return rb.Run(ctx, report)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func projectionNames() string {
	names := make([]string, len(projections.Every))
	for i, p := range projections.Every {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

func answers(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// progressLine is the last line of a terminal, holding a progress bar that
// is rewritten in place; text written to it (log lines) goes above the bar.
type progressLine struct {
	mu  sync.Mutex
	out io.Writer
	bar string
}

const clearLine = "\r\033[K"

// Write prints p (whole lines) above the bar.
func (l *progressLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprint(l.out, clearLine)
	n, err := l.out.Write(p)
	fmt.Fprint(l.out, l.bar)
	return n, err
}

// show replaces the bar.
func (l *progressLine) show(bar string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bar = bar
	fmt.Fprint(l.out, clearLine+bar)
}

// finish leaves the bar as it is, prints a last line under it, and makes
// later writes plain lines.
func (l *progressLine) finish(last string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprint(l.out, "\n"+last+"\n")
	l.bar = ""
}

// renderProgress draws a one-line progress bar: applied of target stream
// sequences, rate and time left.
func renderProgress(p consumers.Progress, now time.Time) string {
	const width = 30
	frac := 1.0
	if p.Target > 0 {
		frac = min(float64(p.Applied)/float64(p.Target), 1)
	}
	rate := float64(p.Applied) / max(now.Sub(p.Started).Seconds(), 1e-3)
	eta := "-"
	if rate > 0 && p.Target > p.Applied {
		eta = time.Duration(float64(p.Target-p.Applied) / rate * float64(time.Second)).Round(time.Second).String()
	}
	filled := int(frac * width)
	return fmt.Sprintf("%s [%s%s] %5.1f%% %d/%d  %.0f events/s  ETA %s", p.Projection,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), 100*frac, p.Applied, p.Target, rate, eta)
}
