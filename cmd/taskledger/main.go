// Command taskledger receives task-completion webhooks into NATS JetStream
// and projects completion histories into Postgres. Run `taskledger help`.
package main

import (
	"context"
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
  taskledger serve [flags]        ingest + projections + query API (default)
  taskledger migrate up [flags]   apply the embedded Postgres migrations

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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		args = []string{"serve"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "migrate":
		return migrate(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// loadConfig parses flags over environment over defaults and validates.
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, *flag.FlagSet, error) {
	cfg := config.Default()
	fs := flag.NewFlagSet("taskledger "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envErrors := cfg.Bind(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, fs, err
	}
	if err := errors.Join(envErrors(), cfg.Validate()); err != nil {
		return cfg, fs, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, fs, nil
}

// newLogger logs JSON, or human-readable lines when stderr is a terminal.
func newLogger(level string, stderr io.Writer) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(level)
	var out io.Writer = stderr
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
		}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}
