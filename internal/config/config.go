// Package config holds taskledger's settings: one plain struct, each field
// with its default, its flag and its environment variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/sources"
)

// Config is every setting of the taskledger binary. Flags override
// environment variables, which override the defaults shown.
type Config struct {
	// Role is what this replica runs (TASKLEDGER_ROLE, default "all"):
	// "ingest" takes webhooks and answers queries without running the
	// projection consumers, "project" runs the consumers and answers
	// queries without the webhook endpoint, "all" does both.
	Role string
	// HTTPAddr is the listen address (TASKLEDGER_HTTP_ADDR, default ":8080").
	HTTPAddr string
	// DatabaseURL is the Postgres URL (TASKLEDGER_DATABASE_URL). The database
	// is created at start when missing and the role may create it.
	DatabaseURL string
	// NATSURL is the NATS server (TASKLEDGER_NATS_URL); empty starts an
	// embedded JetStream server storing under DataDir.
	NATSURL string
	// DataDir is the embedded server's storage (TASKLEDGER_DATA_DIR, "./data").
	DataDir string
	// EmbeddedNATSAddr is where the embedded server also listens, on
	// loopback, so that `taskledger replay` and NATS tools can reach a running
	// service (TASKLEDGER_EMBEDDED_NATS_ADDR, default 127.0.0.1:4223; the
	// zero value, empty in the variable, listens nowhere).
	EmbeddedNATSAddr netip.AddrPort
	// NATSSync is the embedded server's fsync policy (TASKLEDGER_NATS_SYNC):
	// "always" fsyncs every message before it is acknowledged; a duration
	// such as "2m" fsyncs that often. Default "always".
	NATSSync SyncPolicy
	// AdminToken is the bearer token for admin endpoints
	// (TASKLEDGER_ADMIN_TOKEN); empty refuses them.
	AdminToken string
	// LogLevel is a zerolog level (TASKLEDGER_LOG_LEVEL, default "info").
	LogLevel string

	// Stream is the JetStream stream name (TASKLEDGER_STREAM, "TASK_EVENTS").
	Stream string
	// SubjectPrefix prefixes event subjects, <prefix>.<source>
	// (TASKLEDGER_SUBJECT_PREFIX, "taskledger.events").
	SubjectPrefix string
	// DuplicateWindow is JetStream's Nats-Msg-Id window
	// (TASKLEDGER_DUPLICATE_WINDOW, default 2m). Every id in it is held in
	// the server's memory.
	DuplicateWindow time.Duration
	// StreamMaxAge drops events older than this (TASKLEDGER_STREAM_MAX_AGE);
	// 0, the default, keeps every event so projections can be rebuilt;
	// otherwise at least the duplicate window.
	StreamMaxAge time.Duration
	// StreamReplicas is the stream's replica count on a NATS cluster
	// (TASKLEDGER_STREAM_REPLICAS, default 1): 1, 3 or 5.
	StreamReplicas int
	// Partitions splits each projection into this many partitions by task
	// id (TASKLEDGER_PARTITIONS, default 1, at most MaxPartitions): each has
	// its own checkpoint and worker, and the replicas share them. The stream
	// records the count; changing it needs a rebuild of every projection.
	Partitions int
	// Sources, when non-empty, is the allowlist of webhook sources
	// (TASKLEDGER_SOURCES, comma separated); other sources get 404. They
	// accept unsigned deliveries: SourcesFile configures signatures.
	Sources []string
	// SourcesFile is a YAML file naming each source, how its deliveries are
	// signed and where it puts its own delivery id
	// (TASKLEDGER_SOURCES_FILE); unlisted sources get 404. Exclusive with
	// Sources.
	SourcesFile string
	// MaxBodyBytes caps a webhook body (TASKLEDGER_MAX_BODY_BYTES, 1 MiB).
	MaxBodyBytes int64
	// MaxInflightBytes bounds the webhook bodies being handled at once
	// (TASKLEDGER_MAX_INFLIGHT_BYTES, 64 MiB); over it, 429. At least
	// MaxBodyBytes.
	MaxInflightBytes int64
	// PublishTimeout bounds the wait for JetStream's acknowledgement
	// (TASKLEDGER_PUBLISH_TIMEOUT, 5s); past it the webhook gets 503.
	PublishTimeout time.Duration
	// BatchSize is how many events the consumers apply per transaction at
	// most (TASKLEDGER_BATCH_SIZE, default 5000): 1 to 10000. A batch also
	// ends at 4 MiB, and a lone event goes out after a few milliseconds.
	BatchSize int
	// DedupRetention is how long the durable dedup tier remembers a key
	// (TASKLEDGER_DEDUP_RETENTION, default 168h = 7 days); at least the
	// duplicate window.
	DedupRetention time.Duration
	// DedupLookupTimeout is the most the durable dedup tier's lookup adds
	// to a webhook (TASKLEDGER_DEDUP_LOOKUP_TIMEOUT, default 100ms); past it
	// the event is appended and the key stage finds it a repeat.
	DedupLookupTimeout time.Duration
	// ShutdownTimeout bounds the graceful drain on SIGTERM
	// (TASKLEDGER_SHUTDOWN_TIMEOUT, 30s).
	ShutdownTimeout time.Duration
}

// MaxPartitions bounds Config.Partitions: every partition of every
// projection holds a Postgres session while it works.
const MaxPartitions = 64

// Default returns the documented defaults.
func Default() Config {
	return Config{
		Role:               RoleAll,
		HTTPAddr:           ":8080",
		DatabaseURL:        "postgres://postgres@127.0.0.1:5432/taskledger?sslmode=disable",
		DataDir:            "./data",
		EmbeddedNATSAddr:   netip.MustParseAddrPort("127.0.0.1:4223"),
		NATSSync:           SyncPolicy{Always: true},
		LogLevel:           "info",
		Stream:             "TASK_EVENTS",
		SubjectPrefix:      "taskledger.events",
		DuplicateWindow:    2 * time.Minute,
		StreamReplicas:     1,
		Partitions:         1,
		MaxBodyBytes:       1 << 20,
		MaxInflightBytes:   64 << 20,
		PublishTimeout:     5 * time.Second,
		ShutdownTimeout:    30 * time.Second,
		BatchSize:          5000,
		DedupRetention:     7 * 24 * time.Hour,
		DedupLookupTimeout: 100 * time.Millisecond,
	}
}

// EnvVar is the environment variable of the setting whose flag is name:
// TASKLEDGER_ and the name in capitals, dashes as underscores.
func EnvVar(name string) string {
	return "TASKLEDGER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Problem is what is wrong with one setting.
type Problem struct {
	Setting string // the flag's name
	Message string
}

// Error is one line naming the setting's flag and variable.
func (p Problem) Error() string {
	return fmt.Sprintf("--%s (%s): %s", p.Setting, EnvVar(p.Setting), p.Message)
}

func problem(name, format string, args ...any) error {
	return Problem{Setting: name, Message: fmt.Sprintf(format, args...)}
}

// Load reads the configuration: the defaults, then each setting's
// environment variable, then the flags in args. The settings are
// registered on fs beside any flags the caller added; each value is parsed
// once, into its field's type. Load returns the arguments that are not
// flags (they may come before, between or after them) and every problem
// at once, one line each; flag.ErrHelp when args ask for help.
func Load(fs *flag.FlagSet, args []string) (Config, []string, error) {
	c := Default()
	var problems []error // of Problem
	for _, s := range c.settings() {
		fs.Var(&reporting{s.value, s.name, &problems}, s.name, s.usage)
		if raw, ok := os.LookupEnv(EnvVar(s.name)); ok {
			_ = fs.Set(s.name, raw) // a problem is recorded by reporting
		}
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return c, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	// A setting that did not parse is reported once: not again by Validate.
	unparsed := map[string]bool{}
	for _, err := range problems {
		unparsed[err.(Problem).Setting] = true
	}
	if joined, ok := c.Validate().(interface{ Unwrap() []error }); ok {
		for _, err := range joined.Unwrap() {
			var p Problem
			if !errors.As(err, &p) || !unparsed[p.Setting] {
				problems = append(problems, err)
			}
		}
	}
	return c, positional, errors.Join(problems...)
}

// Setting describes one setting for help texts.
type Setting struct {
	Name, Usage, Type string
	Default           string
}

// Settings are every setting, in the order of the Config fields.
func Settings() []Setting {
	c := Default()
	var out []Setting
	for _, s := range c.settings() {
		out = append(out, Setting{Name: s.name, Usage: s.usage, Type: s.value.typeName(), Default: s.value.String()})
	}
	return out
}

type setting struct {
	name, usage string
	value       value
}

// settings ties each field of c to its flag name and usage.
func (c *Config) settings() []setting {
	return []setting{
		{"role", "what this replica runs: all, ingest (webhooks and queries) or project (consumers and queries)", (*stringValue)(&c.Role)},
		{"http-addr", "HTTP listen address", (*stringValue)(&c.HTTPAddr)},
		{"database-url", "Postgres URL", (*stringValue)(&c.DatabaseURL)},
		{"nats-url", "NATS URL(s), comma separated; empty starts an embedded JetStream server", (*stringValue)(&c.NATSURL)},
		{"data-dir", "embedded NATS storage directory", (*stringValue)(&c.DataDir)},
		{"embedded-nats-addr", "loopback address the embedded NATS server listens on; empty for none", (*addrValue)(&c.EmbeddedNATSAddr)},
		{"nats-sync", `embedded NATS fsync policy: "always" or an interval such as 2m`, (*syncValue)(&c.NATSSync)},
		{"admin-token", "bearer token for admin endpoints; empty refuses them", (*stringValue)(&c.AdminToken)},
		{"sources-file", "YAML file of webhook sources and their signature schemes", (*stringValue)(&c.SourcesFile)},
		{"log-level", "log level: trace, debug, info, warn, error", (*stringValue)(&c.LogLevel)},
		{"stream", "JetStream stream name", (*stringValue)(&c.Stream)},
		{"subject-prefix", "event subject prefix", (*stringValue)(&c.SubjectPrefix)},
		{"duplicate-window", "JetStream duplicate window", (*durationValue)(&c.DuplicateWindow)},
		{"stream-max-age", "drop events older than this; 0 keeps all", (*durationValue)(&c.StreamMaxAge)},
		{"stream-replicas", "stream replicas on a NATS cluster: 1, 3 or 5", numberValue[int]{&c.StreamReplicas}},
		{"partitions", "projection partitions by task id, 1 to 64; changing it needs taskledger replay --all", numberValue[int]{&c.Partitions}},
		{"sources", "comma-separated allowed webhook sources; empty allows any", (*listValue)(&c.Sources)},
		{"max-body-bytes", "largest accepted webhook body", numberValue[int64]{&c.MaxBodyBytes}},
		{"max-inflight-bytes", "webhook body bytes handled at once; over it, 429", numberValue[int64]{&c.MaxInflightBytes}},
		{"publish-timeout", "wait for JetStream's ack before answering 503", (*durationValue)(&c.PublishTimeout)},
		{"batch-size", "events per projection transaction: 1 to 10000", numberValue[int]{&c.BatchSize}},
		{"dedup-retention", "how long the durable dedup tier keeps keys; at least the duplicate window", (*durationValue)(&c.DedupRetention)},
		{"dedup-lookup-timeout", "the most the durable dedup lookup adds to a webhook before it is appended anyway", (*durationValue)(&c.DedupLookupTimeout)},
		{"shutdown-timeout", "limit on the graceful drain at SIGINT/SIGTERM", (*durationValue)(&c.ShutdownTimeout)},
	}
}

// Validate reports every invalid setting at once, one line each naming its
// flag and environment variable, with what to change.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) { errs = append(errs, problem(name, format, args...)) }
	if c.Role != RoleAll && c.Role != RoleIngest && c.Role != RoleProject {
		bad("role", "%q: want all, ingest or project", c.Role)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http-addr", "%q: want host:port or :port", c.HTTPAddr)
	}
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("database-url", "%q: want postgres://user@host:port/dbname", c.DatabaseURL)
	}
	if c.NATSURL == "" && c.DataDir == "" {
		bad("data-dir", "required when --nats-url is empty (the embedded server stores there)")
	}
	if c.EmbeddedNATSAddr.IsValid() && !c.EmbeddedNATSAddr.Addr().IsLoopback() {
		bad("embedded-nats-addr", "%s: want a loopback address such as 127.0.0.1:4223", c.EmbeddedNATSAddr)
	}
	if !c.NATSSync.Always && c.NATSSync.Interval <= 0 {
		bad("nats-sync", `%s: want "always" or a positive interval such as 2m`, c.NATSSync)
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		bad("log-level", "%q: want trace, debug, info, warn or error", c.LogLevel)
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, ".*> \t") {
		bad("stream", "%q: want a name without dots, spaces or wildcards", c.Stream)
	}
	if c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, "*> \t") ||
		strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		bad("subject-prefix", "%q: want dot-separated tokens without wildcards", c.SubjectPrefix)
	}
	if c.DuplicateWindow <= 0 {
		bad("duplicate-window", "%v: must be positive", c.DuplicateWindow)
	}
	if c.StreamMaxAge < 0 || (c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow) {
		bad("stream-max-age", "%v: want 0 (keep all) or at least the duplicate window (%v)", c.StreamMaxAge, c.DuplicateWindow)
	}
	if c.StreamReplicas != 1 && c.StreamReplicas != 3 && c.StreamReplicas != 5 {
		bad("stream-replicas", "%d: want 1, 3 or 5 (an even count adds no fault tolerance)", c.StreamReplicas)
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		bad("partitions", "%d: want 1 to %d", c.Partitions, MaxPartitions)
	}
	for _, s := range c.Sources {
		if !domain.ValidSource(s) {
			bad("sources", "%q is not a valid source name ([a-z0-9][a-z0-9_-]{0,63})", s)
		}
	}
	if c.SourcesFile != "" && len(c.Sources) > 0 {
		bad("sources", "set together with --sources-file (TASKLEDGER_SOURCES_FILE): list the sources in the file only")
	}
	if c.MaxBodyBytes <= 0 {
		bad("max-body-bytes", "%d: must be positive", c.MaxBodyBytes)
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		bad("max-inflight-bytes", "%d: want at least --max-body-bytes (%d), or the largest body could never be taken", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if c.PublishTimeout <= 0 {
		bad("publish-timeout", "%v: must be positive", c.PublishTimeout)
	}
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		bad("batch-size", "%d: want 1 to 10000", c.BatchSize)
	}
	if c.DedupRetention < c.DuplicateWindow {
		bad("dedup-retention", "%v: want at least the duplicate window (%v)", c.DedupRetention, c.DuplicateWindow)
	}
	if c.DedupLookupTimeout <= 0 {
		bad("dedup-lookup-timeout", "%v: must be positive", c.DedupLookupTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "%v: must be positive", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}

// The roles a replica can run.
const (
	RoleAll     = "all"
	RoleIngest  = "ingest"
	RoleProject = "project"
)

// Ingests reports whether the replica takes webhooks.
func (c Config) Ingests() bool { return c.Role != RoleProject }

// Projects reports whether the replica runs the projection consumers.
func (c Config) Projects() bool { return c.Role != RoleIngest }

// SourceSet is the accepted webhook sources: those of SourcesFile (read
// now, every problem on its own line), else those of Sources, else any
// well-formed name.
func (c Config) SourceSet() (*sources.Set, error) {
	switch {
	case c.SourcesFile != "":
		return sources.Load(c.SourcesFile, os.LookupEnv)
	case len(c.Sources) > 0:
		return sources.Names(c.Sources), nil
	default:
		return sources.Open(), nil
	}
}

// SyncPolicy is the embedded server's fsync policy: every message before
// its acknowledgement, or every Interval.
type SyncPolicy struct {
	Always   bool
	Interval time.Duration
}

// ParseSyncPolicy reads "always" or an interval such as "2m".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	if s == "always" {
		return SyncPolicy{Always: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return SyncPolicy{}, fmt.Errorf(`%q: want "always" or a positive interval such as 2m`, s)
	}
	return SyncPolicy{Interval: d}, nil
}

func (p SyncPolicy) String() string {
	if p.Always {
		return "always"
	}
	return p.Interval.String()
}
