package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
)

// serve runs until ctx ends (SIGINT/SIGTERM), then stops accepting
// requests, waits for in-flight publishes and closes everything.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, _, err := load(command{name: "serve", about: "Runs the service: webhook ingest, projections and the query API."}, args, stdout, nil)
	if err != nil {
		return err
	}
	return serveConfig(ctx, cfg, newLogger(cfg.LogLevel, stderr))
}

// serveConfig is serve with its configuration loaded.
func serveConfig(ctx context.Context, cfg config.Config, log zerolog.Logger) error {
	if limit, set := boundHeap(cfg); set {
		log.Info().Int64("memory_limit_bytes", limit).Msg("soft memory limit set from the in-flight budget (GOMEMLIMIT overrides it)")
	}
	paceCollector()
	svc, err := service.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	svc.Start()
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		closeWithin(svc, cfg.ShutdownTimeout)
		return err
	}
	srv := &http.Server{
		Handler:           svc.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second, // a body trickling in cannot hold a connection
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("taskledger listening")

	select {
	case err := <-served:
		closeWithin(svc, cfg.ShutdownTimeout)
		return err
	case <-ctx.Done():
	}
	return shutdown(srv, svc, cfg.ShutdownTimeout, log)
}

// shutdown stops taking requests, lets those in flight finish, then closes
// the service: all within timeout.
func shutdown(srv *http.Server, svc *service.Service, timeout time.Duration, log zerolog.Logger) error {
	log.Info().Msg("shutting down: draining requests")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := svc.Close(ctx); cerr != nil {
		return errors.Join(err, fmt.Errorf("shutdown incomplete after %v: %w", timeout, cerr))
	}
	if err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// closeWithin closes svc for a command that is done with it, giving up
// after timeout.
func closeWithin(svc *service.Service, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = svc.Close(ctx) // the command's own result is what it reports
}

// boundHeap sets the Go runtime's soft memory limit to the in-flight
// budget plus heapBeyondBodies, and at least minHeapLimit, unless
// GOMEMLIMIT sets one: the budget bounds the bodies live at once, and the
// limit has the collector reclaim their copies (each body is also held as
// its encoded message) before the heap doubles past them, so a flood of
// large bodies stays within a few hundred MB. heapBeyondBodies leaves room
// for what the budget does not count: the readers' read-ahead, the batches
// being applied, an embedded NATS server; the floor, for the service's own
// working set under full load whatever the budget. The limit is soft: past
// it the collector works harder (up to half the CPU), it refuses nothing.
// It reports the limit and whether it set it.
func boundHeap(cfg config.Config) (int64, bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), false
	}
	limit := max(cfg.MaxInflightBytes+heapBeyondBodies, minHeapLimit)
	debug.SetMemoryLimit(limit)
	return limit, true
}

// collectorPace is serve's GOGC: a collection starts once the heap has
// grown by twice what the last one left live, rather than once. The soft
// memory limit (boundHeap) bounds the heap whatever the pace. Measured
// under load, serve's CPU fell by 5-7 % in ingest alone and by about a
// tenth in the full service, its peak RSS staying under 150 MB.
const collectorPace = 200

// paceCollector sets GOGC to collectorPace unless the environment sets
// GOGC; it reports whether it did.
func paceCollector() bool {
	if os.Getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(collectorPace)
	return true
}

// heapBeyondBodies is what boundHeap allows beyond the in-flight budget,
// and minHeapLimit the least limit it sets.
const (
	heapBeyondBodies = 48 << 20
	minHeapLimit     = 112 << 20
)
