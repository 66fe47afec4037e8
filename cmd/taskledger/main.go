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
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/config"
)

const usage = `taskledger — durable, deduplicated task-completion histories

Usage:
  taskledger [serve] [flags]                     ingest + projections + query API (the default)
  taskledger dev [flags]                         serve, after finding or starting a local Postgres
  taskledger migrate up [flags]                  apply the embedded Postgres migrations
  taskledger history TASK_ID [--policy P] [--json]
                                                 print a task's completion history
  taskledger replay --projection NAME            rebuild a projection from the stream
  taskledger dead-letters list [--all] [--json]  list events the projections set aside
  taskledger dead-letters retry ID               apply a dead letter again
  taskledger bench [--events N] [--concurrency C]
                                                 load test with the raw ceilings beside it
  taskledger healthcheck [--url URL]             exit 0 when the service is ready (for containers)
  taskledger version                             print the version

Run 'taskledger COMMAND -h' for a command's flags. Every setting is a flag of
every command and an environment variable; 'taskledger serve -h' lists them.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskledger:", err)
		os.Exit(2)
	}
}

// run runs the command args names, and adds to its error what the operator
// can do about it. Help asked for is not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return withHint(err)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		args = append([]string{"serve"}, args...) // serve is the default command
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "dev":
		return dev(ctx, args[1:], stdout, stderr)
	case "migrate":
		return migrate(ctx, args[1:], stdout, stderr)
	case "history":
		return history(ctx, args[1:], stdout, stderr)
	case "replay":
		return replay(ctx, args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "dead-letters":
		return deadLetters(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		if isHelp(args[0]) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// command describes a command for its -h: how to call it, and which
// settings it uses (nil: all of them).
type command struct {
	name     string // "history TASK_ID"
	about    string
	settings []string
}

// dbSettings are the settings of the commands that only use the database.
var dbSettings = []string{"database-url", "log-level"}

// load parses a command's arguments: its own flags (added by own, which may
// be nil), every setting, and its positional arguments, which may come
// before, between or after the flags. With -h it prints the command's help
// to stdout and returns flag.ErrHelp.
func load(cmd command, args []string, stdout io.Writer, own func(*flag.FlagSet)) (config.Config, []string, error) {
	fs := flag.NewFlagSet("taskledger "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, and help printed below
	fs.Usage = func() {}
	if own != nil {
		own(fs)
	}
	cfg, positional, err := config.Load(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printHelp(stdout, cmd, fs)
	}
	return cfg, positional, err
}

// printHelp lists the command's own flags first, then the settings it uses.
func printHelp(w io.Writer, cmd command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: taskledger %s [flags]\n\n%s\n", cmd.name, cmd.about)
	settings := config.Settings()
	isSetting := map[string]bool{}
	for _, s := range settings {
		isSetting[s.Name] = true
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var own bool
	fs.VisitAll(func(f *flag.Flag) {
		if isSetting[f.Name] {
			return
		}
		if !own {
			fmt.Fprintln(tw, "\nFlags:")
			own = true
		}
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(tw, "  --%s %s\t%s%s\n", f.Name, typ, usage, defaultNote(f.DefValue, typ))
	})
	fmt.Fprintln(tw, "\nSettings (each a flag or an environment variable; flags win):")
	for _, s := range settings {
		if cmd.settings == nil || slices.Contains(cmd.settings, s.Name) {
			fmt.Fprintf(tw, "  --%s %s\t%s\t%s%s\n", s.Name, s.Type, config.EnvVar(s.Name), s.Usage, defaultNote(s.Default, s.Type))
		}
	}
	tw.Flush()
	if cmd.settings != nil {
		fmt.Fprintln(w, "\nIt takes every other setting too; 'taskledger serve -h' lists them.")
	}
}

func defaultNote(value, typ string) string {
	if value == "" || (typ == "" && value == "false") {
		return ""
	}
	return fmt.Sprintf(" (default %s)", value)
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
	return loggerTo(level, stderr, isTerminal(stderr))
}

// loggerTo logs to out: readable lines when pretty, else JSON.
func loggerTo(level string, out io.Writer, pretty bool) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(level)
	if pretty {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: "15:04:05"}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}
