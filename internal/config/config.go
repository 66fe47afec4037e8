// Package config holds taskledger's settings: one plain struct, each field
// with its default, its flag and its environment variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
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
	// service (TASKLEDGER_EMBEDDED_NATS_ADDR, default "127.0.0.1:4223"; empty
	// listens nowhere).
	EmbeddedNATSAddr string
	// NATSSync is the embedded server's fsync policy (TASKLEDGER_NATS_SYNC):
	// "always" fsyncs every message before it is acknowledged; a duration
	// such as "2m" fsyncs that often. Default "always".
	NATSSync string
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
	// 0, the default, keeps every event so projections can be rebuilt.
	StreamMaxAge time.Duration
	// StreamReplicas is the stream's replica count on a NATS cluster
	// (TASKLEDGER_STREAM_REPLICAS, default 1; use 3 on a three-node cluster).
	StreamReplicas int
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
	// PublishTimeout bounds the wait for JetStream's acknowledgement
	// (TASKLEDGER_PUBLISH_TIMEOUT, 5s); past it the webhook gets 503.
	PublishTimeout time.Duration
	// BatchSize is how many events a projection applies per transaction
	// (TASKLEDGER_BATCH_SIZE, default 500).
	BatchSize int
	// DedupRetention is how long the durable dedup tier remembers a key
	// (TASKLEDGER_DEDUP_RETENTION, default 168h = 7 days).
	DedupRetention time.Duration
	// ShutdownTimeout bounds the graceful drain on SIGTERM
	// (TASKLEDGER_SHUTDOWN_TIMEOUT, 30s).
	ShutdownTimeout time.Duration
}

// Default returns the documented defaults.
func Default() Config {
	return Config{
		Role:             RoleAll,
		HTTPAddr:         ":8080",
		DatabaseURL:      "postgres://postgres@127.0.0.1:5432/taskledger?sslmode=disable",
		DataDir:          "./data",
		EmbeddedNATSAddr: "127.0.0.1:4223",
		NATSSync:         "always",
		LogLevel:         "info",
		Stream:           "TASK_EVENTS",
		SubjectPrefix:    "taskledger.events",
		DuplicateWindow:  2 * time.Minute,
		StreamReplicas:   1,
		MaxBodyBytes:     1 << 20,
		PublishTimeout:   5 * time.Second,
		ShutdownTimeout:  30 * time.Second,
		BatchSize:        500,
		DedupRetention:   7 * 24 * time.Hour,
	}
}

// Bind registers every field on fs, each defaulting to its environment
// variable when set and to the value already in c otherwise. Environment
// values that do not parse are reported by the returned function, which is
// meant to be called after fs.Parse.
func (c *Config) Bind(fs *flag.FlagSet) (envErrors func() error) {
	var errs []error
	str := func(p *string, name, env, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			*p = v
		}
		fs.StringVar(p, name, *p, usage+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("$%s: %q is not a duration (e.g. 90s, 2m): %w", env, v, err))
			}
			*p = d
		}
		fs.DurationVar(p, name, *p, usage+" ($"+env+")")
	}
	str(&c.Role, "role", "TASKLEDGER_ROLE", "what this replica runs: all, ingest (webhooks and queries) or project (consumers and queries)")
	str(&c.HTTPAddr, "http-addr", "TASKLEDGER_HTTP_ADDR", "HTTP listen address")
	str(&c.DatabaseURL, "database-url", "TASKLEDGER_DATABASE_URL", "Postgres URL")
	str(&c.NATSURL, "nats-url", "TASKLEDGER_NATS_URL", "NATS URL; empty starts an embedded JetStream server")
	str(&c.DataDir, "data-dir", "TASKLEDGER_DATA_DIR", "embedded NATS storage directory")
	str(&c.EmbeddedNATSAddr, "embedded-nats-addr", "TASKLEDGER_EMBEDDED_NATS_ADDR", "loopback address the embedded NATS server listens on; empty for none")
	str(&c.NATSSync, "nats-sync", "TASKLEDGER_NATS_SYNC", `embedded NATS fsync policy: "always" or an interval such as 2m`)
	str(&c.AdminToken, "admin-token", "TASKLEDGER_ADMIN_TOKEN", "bearer token for admin endpoints; empty refuses them")
	str(&c.SourcesFile, "sources-file", "TASKLEDGER_SOURCES_FILE", "YAML file of webhook sources and their signature schemes")
	str(&c.LogLevel, "log-level", "TASKLEDGER_LOG_LEVEL", "log level: trace, debug, info, warn, error")
	str(&c.Stream, "stream", "TASKLEDGER_STREAM", "JetStream stream name")
	str(&c.SubjectPrefix, "subject-prefix", "TASKLEDGER_SUBJECT_PREFIX", "event subject prefix")
	dur(&c.DuplicateWindow, "duplicate-window", "TASKLEDGER_DUPLICATE_WINDOW", "JetStream duplicate window")
	dur(&c.StreamMaxAge, "stream-max-age", "TASKLEDGER_STREAM_MAX_AGE", "drop events older than this; 0 keeps all")
	dur(&c.PublishTimeout, "publish-timeout", "TASKLEDGER_PUBLISH_TIMEOUT", "wait for JetStream's ack before answering 503")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "TASKLEDGER_SHUTDOWN_TIMEOUT", "graceful shutdown limit")
	dur(&c.DedupRetention, "dedup-retention", "TASKLEDGER_DEDUP_RETENTION", "how long the durable dedup tier keeps keys")

	sources := strings.Join(c.Sources, ",")
	str(&sources, "sources", "TASKLEDGER_SOURCES", "comma-separated allowed webhook sources; empty allows any")
	maxBody := strconv.FormatInt(c.MaxBodyBytes, 10)
	str(&maxBody, "max-body-bytes", "TASKLEDGER_MAX_BODY_BYTES", "largest accepted webhook body")
	batch := strconv.Itoa(c.BatchSize)
	str(&batch, "batch-size", "TASKLEDGER_BATCH_SIZE", "events per projection transaction")
	replicas := strconv.Itoa(c.StreamReplicas)
	str(&replicas, "stream-replicas", "TASKLEDGER_STREAM_REPLICAS", "stream replicas on a NATS cluster (1, 3 or 5)")
	return func() error {
		c.Sources = nil
		for _, s := range strings.Split(sources, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.Sources = append(c.Sources, s)
			}
		}
		n, err := strconv.ParseInt(maxBody, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("max-body-bytes: %q is not a whole number of bytes", maxBody))
		}
		c.MaxBodyBytes = n
		if c.BatchSize, err = strconv.Atoi(batch); err != nil {
			errs = append(errs, fmt.Errorf("batch-size: %q is not a whole number", batch))
		}
		if c.StreamReplicas, err = strconv.Atoi(replicas); err != nil {
			errs = append(errs, fmt.Errorf("stream-replicas: %q is not a whole number", replicas))
		}
		return errors.Join(errs...)
	}
}

// Validate reports every invalid setting at once, each with what to change.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Role != RoleAll && c.Role != RoleIngest && c.Role != RoleProject {
		bad("role %q: want all, ingest or project", c.Role)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http-addr %q: want host:port or :port (%v)", c.HTTPAddr, err)
	}
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("database-url %q: want postgres://user@host:port/dbname", c.DatabaseURL)
	}
	if c.NATSURL == "" && c.DataDir == "" {
		bad("data-dir is required when nats-url is empty (the embedded server stores there)")
	}
	if c.EmbeddedNATSAddr != "" {
		if _, err := c.EmbeddedNATSPort(); err != nil {
			bad("%v", err)
		}
	}
	if _, _, err := c.SyncPolicy(); err != nil {
		bad("%v", err)
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		bad("log-level %q: want trace, debug, info, warn or error", c.LogLevel)
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, ".*> \t") {
		bad("stream %q: want a name without dots, spaces or wildcards", c.Stream)
	}
	if c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, "*> \t") ||
		strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		bad("subject-prefix %q: want dot-separated tokens without wildcards", c.SubjectPrefix)
	}
	if c.DuplicateWindow <= 0 {
		bad("duplicate-window %v: must be positive", c.DuplicateWindow)
	}
	if c.StreamMaxAge < 0 || (c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow) {
		bad("stream-max-age %v: want 0 (keep all) or at least the duplicate window", c.StreamMaxAge)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("stream-replicas %d: want 1 to 5", c.StreamReplicas)
	}
	for _, s := range c.Sources {
		if !domain.ValidSource(s) {
			bad("sources: %q is not a valid source name ([a-z0-9][a-z0-9_-]{0,63})", s)
		}
	}
	if c.SourcesFile != "" && len(c.Sources) > 0 {
		bad("sources and sources-file are both set: list the sources in the file only")
	}
	if c.MaxBodyBytes <= 0 {
		bad("max-body-bytes %d: must be positive", c.MaxBodyBytes)
	}
	if c.PublishTimeout <= 0 {
		bad("publish-timeout %v: must be positive", c.PublishTimeout)
	}
	if c.BatchSize < 1 || c.BatchSize > 10_000 {
		bad("batch-size %d: want 1 to 10000", c.BatchSize)
	}
	if c.DedupRetention < c.DuplicateWindow {
		bad("dedup-retention %v: want at least the duplicate window (%v)", c.DedupRetention, c.DuplicateWindow)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout %v: must be positive", c.ShutdownTimeout)
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

// SyncPolicy interprets NATSSync: always, or the fsync interval.
func (c Config) SyncPolicy() (always bool, interval time.Duration, err error) {
	if c.NATSSync == "always" {
		return true, 0, nil
	}
	d, err := time.ParseDuration(c.NATSSync)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf(`nats-sync %q: want "always" or a positive interval such as 2m`, c.NATSSync)
	}
	return false, d, nil
}

// EmbeddedNATSPort is the port of EmbeddedNATSAddr, which must be on
// loopback; 0 when the embedded server listens nowhere.
func (c Config) EmbeddedNATSPort() (int, error) {
	if c.EmbeddedNATSAddr == "" {
		return 0, nil
	}
	host, port, err := net.SplitHostPort(c.EmbeddedNATSAddr)
	n, perr := strconv.Atoi(port)
	if ip := net.ParseIP(host); err != nil || perr != nil || n < 1 || n > 65535 || ip == nil || !ip.IsLoopback() {
		return 0, fmt.Errorf("embedded-nats-addr %q: want a loopback host:port such as 127.0.0.1:4223", c.EmbeddedNATSAddr)
	}
	return n, nil
}
