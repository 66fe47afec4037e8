package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/taskledger/taskledger/api"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/projections"
)

// history prints a task's completion history: a table, or the API's JSON.
func history(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var policyName string
	var asJSON bool
	cmd := command{name: "history TASK_ID", about: "Prints a task's completion history: a table, or the API's JSON.", settings: dbSettings}
	cfg, positional, err := load(cmd, args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&policyName, "policy", "all", "all, first or latest")
		fs.BoolVar(&asJSON, "json", false, "print JSON as the HTTP API does")
	})
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return errors.New("usage: taskledger history TASK_ID [--policy all|first|latest] [--json]")
	}
	policy, err := domain.ParsePolicy(policyName)
	if err != nil {
		return err
	}
	pool, err := postgres.OpenMigrated(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	h, err := projections.ForPolicy(policy).History(ctx, pool, positional[0])
	if err != nil {
		return err
	}
	view := api.ViewHistory(h)
	if asJSON {
		return printJSON(stdout, view)
	}
	state := "not reopened"
	if view.Reopened {
		state = "reopened at " + view.ReopenedAt.Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "task %s · policy %s · %d completion(s) · %s\n\n", view.TaskID, view.Policy, len(view.Completions), state)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPLETED AT\tCOMPLETED BY\tPROCESS\tSOURCE\tSEQ\tDEDUP KEY")
	for _, c := range view.Completions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", c.CompletedAt.Format(time.RFC3339Nano), dash(c.CompletedBy),
			dash(c.ProcessID), c.Source, c.StreamSeq, c.DedupKey)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
