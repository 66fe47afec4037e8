package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"

	"github.com/taskledger/taskledger/internal/devdb"
)

// dev is serve for a development machine (`make run`): it first finds or
// starts a Postgres at the configured URL (a private cluster under the data
// directory when the server programs are installed, else the Compose
// service), and stops the cluster it started when the service stops.
func dev(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, _, err := load(command{name: "dev", about: "Runs serve after finding or starting a Postgres at --database-url:\n" +
		"a private cluster under --data-dir, or the Compose postgres service (what `make run` runs)."}, args, stdout, nil)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel, stderr)
	db, err := devdb.Ensure(ctx, devdb.Options{URL: cfg.DatabaseURL, Dir: filepath.Join(cfg.DataDir, "postgres"), Log: log})
	if err != nil {
		return err
	}
	defer func() {
		// ctx has ended by now (that is how serve stops): stop on a fresh one.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(err, db.Stop(stopCtx))
	}()
	return serveConfig(ctx, cfg, log)
}
