package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/taskledger/taskledger/api"
	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/projections"
)

const deadLettersUsage = "usage: taskledger dead-letters list [--all] [--json] | taskledger dead-letters retry ID"

// deadLetters lists dead letters or retries one.
func deadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, deadLettersUsage)
		return nil
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "retry") {
		return errors.New(deadLettersUsage)
	}
	cmd := command{name: "dead-letters list", about: "Lists the events the projections set aside.", settings: dbSettings}
	if args[0] == "retry" {
		cmd = command{name: "dead-letters retry ID", about: "Applies a dead letter again from its kept message.", settings: dbSettings}
	}
	var all, asJSON bool
	cfg, positional, err := load(cmd, args[1:], stdout, func(fs *flag.FlagSet) {
		if args[0] == "list" {
			fs.BoolVar(&all, "all", false, "include resolved dead letters")
			fs.BoolVar(&asJSON, "json", false, "print JSON as the HTTP API does")
		}
	})
	if err != nil {
		return err
	}
	pool, err := postgres.OpenMigrated(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	if args[0] == "retry" {
		if len(positional) != 1 {
			return errors.New(deadLettersUsage)
		}
		id, err := strconv.ParseInt(positional[0], 10, 64)
		if err != nil {
			return fmt.Errorf("dead letter id %q is not a number", positional[0])
		}
		resolved, reason, err := consumers.RetryDeadLetter(ctx, pool, id)
		if err != nil {
			return err
		}
		if !resolved {
			return fmt.Errorf("dead letter %d still fails: %s", id, reason)
		}
		fmt.Fprintf(stdout, "dead letter %d applied and resolved\n", id)
		return nil
	}

	letters, err := projections.DeadLetters(ctx, pool, all, 1000)
	if err != nil {
		return err
	}
	view := api.ViewDeadLetters(letters)
	if asJSON {
		return printJSON(stdout, view)
	}
	if len(view.DeadLetters) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROJECTION\tSEQ\tATTEMPTS\tCREATED\tRESOLVED\tREASON")
	for _, v := range view.DeadLetters {
		resolved := "-"
		if v.ResolvedAt != nil {
			resolved = v.ResolvedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\t%s\n", v.ID, v.Projection, v.StreamSeq, v.Attempts,
			v.CreatedAt.Format(time.RFC3339), resolved, v.Reason)
	}
	return tw.Flush()
}
