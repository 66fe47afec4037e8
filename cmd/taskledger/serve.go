package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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
	svc, err := service.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer svc.Close()
	svc.Start()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
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
		return err
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down: draining requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}
