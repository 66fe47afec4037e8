package main

import (
	"context"
	"fmt"
	"io"

	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/migrations"
)

func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := command{name: "migrate up", about: "Applies the embedded migrations, creating the database when missing.", settings: dbSettings}
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"up", args[0]}
	}
	if len(args) == 0 || args[0] != "up" {
		return fmt.Errorf("usage: taskledger migrate up [flags]")
	}
	cfg, _, err := load(cmd, args[1:], stdout, nil)
	if err != nil {
		return err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, newLogger(cfg.LogLevel, stderr))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Up(pool); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied: schema at version %d\n", migrations.Latest())
	return nil
}
