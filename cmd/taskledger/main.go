// Command taskledger receives task-completion webhooks into NATS JetStream
// and projects completion histories into Postgres. Run `taskledger help`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/config"
)

const usage = `taskledger — durable, deduplicated task-completion histories

Usage:
  taskledger serve [flags]                       ingest + projections + query API (default)
  taskledger dev [flags]                         serve, after finding or starting a local Postgres
  taskledger migrate up [flags]                  apply the embedded Postgres migrations
  taskledger history TASK_ID [--policy P] [--json]
                                                 print a task's completion history
  taskledger replay --projection NAME            rebuild a projection from the stream
  taskledger dead-letters list [--all] [--json]  list events the projections set aside
  taskledger dead-letters retry ID               apply a dead letter again
  taskledger bench [--events N] [--concurrency C]
                                                 load test with the raw ceilings beside it

Run 'taskledger COMMAND -h' for a command's flags; each flag also reads the
environment variable named in its help.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "taskledger:", err)
		}
		os.Exit(2)
	}
}

// run runs the command args names, and adds to its error what the operator
// can do about it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return withHint(dispatch(ctx, args, stdout, stderr))
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		args = []string{"serve"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "dev":
		return dev(ctx, args[1:], stderr)
	case "migrate":
		return migrate(ctx, args[1:], stdout, stderr)
	case "history":
		return history(ctx, args[1:], stdout, stderr)
	case "replay":
		return replay(ctx, args[1:], stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "dead-letters":
		return deadLetters(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// loadConfig parses flags over environment over defaults and validates.
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, error) {
	cfg, _, err := loadConfigWithArgs(name, args, stderr, nil)
	return cfg, err
}

// loadConfigWithArgs is loadConfig for commands with flags of their own
// (added by extra) and positional arguments, which may come before or
// between the flags; it returns the positional ones.
func loadConfigWithArgs(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (config.Config, []string, error) {
	cfg := config.Default()
	fs := flag.NewFlagSet("taskledger "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envErrors := cfg.Bind(fs)
	if extra != nil {
		extra(fs)
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return cfg, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	if err := errors.Join(envErrors(), cfg.Validate()); err != nil {
		return cfg, nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, positional, nil
}

// printJSON writes v as indented JSON, as the commands' --json flags do.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// newLogger logs JSON, or human-readable lines when stderr is a terminal.
func newLogger(level string, stderr io.Writer) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(level)
	var out io.Writer = stderr
	if isTerminal(stderr) {
		out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}
