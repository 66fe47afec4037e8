// Package service assembles taskledger from its configuration: the event
// stream, the database, and the HTTP API. The serve command and the
// integration tests build it the same way.
package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/api"
	"github.com/taskledger/taskledger/console"
	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/ingest"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/metrics"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/internal/sources"
	"github.com/taskledger/taskledger/migrations"
	"github.com/taskledger/taskledger/projections"
)

// Service is a running taskledger: connections plus the HTTP handler.
type Service struct {
	cfg       config.Config
	log       zerolog.Logger
	embedded  *server.Server        // nil when connected to an external server
	groupSync *eventlog.GroupSync   // puts acknowledged appends on disk when NATSSync is always; nil otherwise
	creds     *eventlog.Credentials // the embedded server's; nil for an external one
	dataLock  *os.File              // flock held on the embedded server's data dir
	nc        *nats.Conn
	js        jetstream.JetStream
	stream    jetstream.Stream
	pool      *pgxpool.Pool
	api       *api.API
	metrics   *metrics.Metrics
	// recentIngest samples the webhook outcome counters for the console.
	recentIngest *metrics.Recent
	handler      http.Handler
	sources      *sources.Set

	consumers  []*consumers.Consumer
	share      *consumers.Share
	rebuilder  *consumers.Rebuilder
	background context.Context // ends at Close
	stop       context.CancelFunc
	running    sync.WaitGroup // consumers and rebuilds
}

// batchBytes bounds a live batch in memory; a rebuild's is four times this.
const batchBytes = 4 << 20

// Option changes how Open prepares the service.
type Option func(*options)

type options struct{ verifyStream, repartition bool }

// Repartition lets Open change the partition count the stream records to
// the configured one, for a rebuild of every projection (taskledger replay
// --all); without it, Open refuses a stream or projections kept with
// another count.
func Repartition() Option { return func(o *options) { o.repartition = true } }

// Open connects to (or starts) NATS, declares the stream, opens the
// database, applies migrations, checks that the database follows this very
// stream and builds the HTTP handler. Every failure says what to do about
// it; a database that follows another stream is a
// *projections.StreamMismatchError.
func Open(ctx context.Context, cfg config.Config, log zerolog.Logger, opts ...Option) (*Service, error) {
	o := options{verifyStream: true}
	for _, opt := range opts {
		opt(&o)
	}
	return open(ctx, cfg, log, o)
}

// OpenToAdopt is Open for a database that may follow another stream: use it
// only to rebuild every projection with AdoptStream.
func OpenToAdopt(ctx context.Context, cfg config.Config, log zerolog.Logger) (*Service, error) {
	return open(ctx, cfg, log, options{})
}

func open(ctx context.Context, cfg config.Config, log zerolog.Logger, o options) (_ *Service, err error) {
	sourceSet, err := cfg.SourceSet()
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, sources: sourceSet}
	s.background, s.stop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			_ = s.Close(closeCtx) // the error that stopped Open is the one to report
		}
	}()
	if cfg.NATSURL == "" {
		if err := s.startEmbedded(); err != nil {
			return nil, err
		}
	}
	if s.nc, err = eventlog.Connect(cfg.NATSURL, s.embedded, s.creds, log); err != nil {
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ensure := eventlog.EnsureStream
	if o.repartition {
		ensure = eventlog.Repartition
	}
	if s.stream, err = ensure(ctx, s.js, s.streamConfig()); err != nil {
		return nil, err
	}
	if s.embedded != nil && cfg.NATSSync.Always {
		if s.groupSync, err = eventlog.NewGroupSync(embeddedStoreDir(cfg), cfg.Stream); err != nil {
			return nil, err
		}
	}
	if s.pool, err = postgres.Open(ctx, cfg.DatabaseURL, log); err != nil {
		return nil, err
	}
	if err := migrate(ctx, s.pool, log); err != nil {
		return nil, err
	}
	if o.verifyStream {
		if err := s.verifyStream(ctx); err != nil {
			return nil, err
		}
	}
	if !o.repartition {
		if err := s.ensurePartitions(ctx); err != nil {
			return nil, err
		}
	}
	s.api, err = api.New(api.Options{DB: s.pool, Stream: s, StartRebuild: s.startRebuild,
		RetryDeadLetter: func(ctx context.Context, id int64) (bool, string, error) {
			return consumers.RetryDeadLetter(ctx, s.pool, id)
		},
		Stalls: s.stalls, AdminToken: cfg.AdminToken}, log)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range projections.Every {
		names = append(names, p.Name)
	}
	// A registry of its own, so that services sharing a process (tests)
	// keep their metrics apart.
	s.metrics = metrics.New(prometheus.NewRegistry(), metrics.Options{
		Projections: names, Sources: sourceSet.Listed(), Status: s.projectionStatus, Pool: s.pool,
	})
	s.recentIngest = metrics.NewRecent(s.metrics.WebhookOutcomes, 5*time.Second, 15*time.Minute)
	s.running.Go(func() { s.recentIngest.Run(s.background) })
	read := consumers.ReadOptions{
		Stream:   cfg.Stream, // every event, unless partitioned below
		MaxCount: cfg.BatchSize,
		MaxBytes: batchBytes,
		Wait:     time.Second,
		Linger:   5 * time.Millisecond,
	}
	s.share = consumers.NewShare(s.pool, time.Second, log)
	for _, g := range projections.Groups(cfg.Partitions) {
		for part := range g.Partitions {
			partRead := read
			if g.Partitions > 1 {
				partRead.Subjects = s.streamConfig().PartitionSubjects(part)
			}
			s.consumers = append(s.consumers, consumers.New(g, s.pool, s.js, consumers.Options{
				ReadOptions:    partRead,
				StandbyPoll:    time.Second,
				Partition:      part,
				Position:       s.position(),
				Share:          s.share,
				DedupRetention: cfg.DedupRetention,
				Metrics:        s.metrics,
				DrainTimeout:   cfg.ShutdownTimeout,
			}, log))
		}
	}
	rebuild := read
	rebuild.MaxCount = max(cfg.BatchSize, 5000)
	rebuild.MaxBytes = 4 * batchBytes
	s.rebuilder = consumers.NewRebuilder(s.pool, s.js, rebuild, log)
	s.handler = s.routes()
	return s, nil
}

// migrate applies the pending migrations, logging when there were any.
func migrate(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) error {
	before, _, err := migrations.Version(ctx, pool)
	if err != nil {
		return err
	}
	if err := migrations.Up(pool); err != nil {
		return err
	}
	if before != migrations.Latest() {
		log.Info().Uint("from_version", before).Uint("to_version", migrations.Latest()).Msg("migrations applied")
	}
	return nil
}

// Start runs the projection consumers in the background until Close,
// unless the replica's role is ingest.
func (s *Service) Start() {
	if !s.cfg.Projects() {
		s.log.Info().Str("role", s.cfg.Role).Msg("projection consumers not started")
		return
	}
	s.running.Go(func() { s.share.Run(s.background) })
	for _, c := range s.consumers {
		s.running.Go(func() { c.Run(s.background) })
	}
}

// ensurePartitions makes every projection keep one checkpoint per
// configured partition, refusing projections kept with another count.
func (s *Service) ensurePartitions(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, p := range projections.Every {
			if err := projections.EnsurePartitions(ctx, tx, p.Name, p.PartitionsOf(s.cfg.Partitions)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Service) position() eventlog.Position { return eventlog.NewPosition(s.js, s.streamConfig()) }

// StartRebuild starts a rebuild of proj (see consumers.Rebuilder.Start),
// the key stage with the configured retention.
func (s *Service) StartRebuild(ctx context.Context, proj projections.Projection) (*consumers.Rebuild, error) {
	return s.rebuilder.Start(ctx, s.configured(proj))
}

// configured is proj as this service applies it.
func (s *Service) configured(proj projections.Projection) projections.Projection {
	if proj.Keys {
		proj.KeyRetention = s.cfg.DedupRetention
	}
	return proj
}

// Rebuilder rebuilds projections from the stream.
func (s *Service) Rebuilder() *consumers.Rebuilder { return s.rebuilder }

// startRebuild takes proj's rebuild lock now and runs the rebuild in the
// background, logging progress, until it ends or the service closes.
func (s *Service) startRebuild(ctx context.Context, proj projections.Projection) error {
	rb, err := s.StartRebuild(ctx, proj)
	if err != nil {
		return err
	}
	log := s.log.With().Str("projection", proj.Name).Logger()
	log.Info().Msg("rebuild started")
	s.running.Go(func() {
		if err := rb.Run(s.background, ProgressLogger(log, 5*time.Second)); err != nil {
			log.Error().Err(err).Msg("rebuild failed; the live tables are untouched")
		}
	})
	return nil
}

// ProgressLogger returns a progress report that logs at most once per
// interval, and always the final report.
func ProgressLogger(log zerolog.Logger, interval time.Duration) func(consumers.Progress) {
	var last time.Time
	return func(p consumers.Progress) {
		if !p.Done && time.Since(last) < interval {
			return
		}
		last = time.Now()
		rate := float64(p.Applied) / max(time.Since(p.Started).Seconds(), 1e-3)
		log.Info().Uint64("applied_seq", p.Applied).Uint64("target_seq", p.Target).
			Float64("events_per_second", math.Round(rate)).Bool("done", p.Done).Msg("rebuild progress")
	}
}

// Consumers are the projection consumers, one per group of projections
// and partition.
func (s *Service) Consumers() []*consumers.Consumer { return s.consumers }

func (s *Service) startEmbedded() (err error) {
	dir := embeddedStoreDir(s.cfg)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create data dir %s: %w", dir, err)
	}
	// nats-server does not guard its store against a second process.
	if s.dataLock, err = lockDir(s.cfg.DataDir); err != nil {
		return err
	}
	// Nothing may append to the stream around the webhook endpoint's
	// checks: the listener requires the credentials kept in the data dir.
	creds, err := eventlog.LoadOrCreateCredentials(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.creds = &creds
	opts := eventlog.ServerOptions{StoreDir: dir, SyncInterval: s.cfg.NATSSync.Interval, Credentials: s.creds}
	if addr := s.cfg.EmbeddedNATSAddr; addr.IsValid() {
		opts.Host, opts.Port = addr.Addr().String(), int(addr.Port())
	}
	s.embedded, err = eventlog.StartServer(opts)
	if err != nil {
		return err
	}
	s.log.Info().Str("store_dir", dir).Stringer("sync", s.cfg.NATSSync).Str("listen", listenAddr(s.cfg)).
		Msg("embedded NATS JetStream started")
	return nil
}

// listenAddr is where the embedded server listens, or "none".
func listenAddr(cfg config.Config) string {
	if !cfg.EmbeddedNATSAddr.IsValid() {
		return "none"
	}
	return cfg.EmbeddedNATSAddr.String()
}

// embeddedStoreDir is where the embedded server keeps its file store.
func embeddedStoreDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "nats") }

// HasStoredStream reports whether cfg's data directory holds the embedded
// server's copy of cfg's stream, so that opening it offline finds events.
func HasStoredStream(cfg config.Config) bool {
	// The file store keeps a stream under jetstream/<account>/streams/<name>.
	matches, _ := filepath.Glob(filepath.Join(embeddedStoreDir(cfg), "jetstream", "*", "streams", cfg.Stream))
	return len(matches) > 0
}

func (s *Service) streamConfig() eventlog.StreamConfig {
	return eventlog.StreamConfig{
		Name:            s.cfg.Stream,
		SubjectPrefix:   s.cfg.SubjectPrefix,
		DuplicateWindow: s.cfg.DuplicateWindow,
		MaxAge:          s.cfg.StreamMaxAge,
		Replicas:        s.cfg.StreamReplicas,
		Partitions:      s.cfg.Partitions,
	}
}

// Handler is the whole HTTP API, with request logging.
func (s *Service) Handler() http.Handler { return s.handler }

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	if s.cfg.Ingests() {
		var durable []eventlog.AppendOption
		if s.groupSync != nil {
			durable = append(durable, eventlog.WithGroupSync(s.groupSync))
		}
		appender := eventlog.NewAppender(s.nc, s.js, s.stream, s.streamConfig(), durable...)
		keys := ingest.NewDurableTier(s.pool, ingest.DurableOptions{
			Retention:  s.cfg.DedupRetention,
			Window:     s.cfg.DuplicateWindow,
			Timeout:    s.cfg.DedupLookupTimeout,
			FirstAfter: s.position().FirstAfter,
		}, s.log)
		s.running.Go(func() { keys.Run(s.background) })
		mux.Handle("POST /v1/webhooks/{source}", s.metrics.Webhooks(ingest.New(appender, ingest.Options{
			Sources:          s.sources,
			MaxBodyBytes:     s.cfg.MaxBodyBytes,
			MaxInflightBytes: s.cfg.MaxInflightBytes,
			PublishTimeout:   s.cfg.PublishTimeout,
			Now:              time.Now,
			Metrics:          s.metrics,
			Keys:             keys,
		}, s.log)))
	} else {
		mux.HandleFunc("POST /v1/webhooks/{source}", func(w http.ResponseWriter, _ *http.Request) {
			httpjson.Error(w, http.StatusNotFound, httpjson.CodeNotIngesting,
				"this replica's role is "+s.cfg.Role+": send webhooks to a replica whose role is ingest or all")
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /v1/ingest/summary", api.IngestSummary(s.recentIngest))
	s.api.Register(mux)
	console.Register(mux)
	return httpjson.LogRequests(s.log, s.metrics.HTTP(httpjson.RouterErrors(mux)))
}

// projectionStatus is what GET /v1/projections reports, for the metrics.
func (s *Service) projectionStatus(ctx context.Context) ([]metrics.ProjectionStatus, error) {
	views, err := s.api.Projections(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.ProjectionStatus, 0, len(views))
	for _, v := range views {
		// Off the stream, the lag in events is no count of this stream's
		// events, but must not read 0 for an alert.
		lag := projections.OffStream(v.FurthestCheckpoint, v.StreamLastSeq)
		if v.Lag != nil {
			lag = *v.Lag
		}
		st := metrics.ProjectionStatus{Name: v.Name, Checkpoint: v.Checkpoint, LagEvents: lag,
			LagSeconds: v.LagSeconds, DeadLetters: v.DeadLetters}
		if rb := v.Rebuild; rb != nil && rb.Outcome == "running" {
			st.RebuildRatio = 1
			if rb.TargetSeq > 0 {
				st.RebuildRatio = float64(rb.AppliedSeq) / float64(rb.TargetSeq)
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// ready answers 200 when NATS and the stream answer, Postgres answers,
// every embedded migration is applied and every projection follows this
// stream (see streamCheck); 503 naming each problem otherwise.
func (s *Service) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"nats": "ok", "postgres": "ok", "migrations": "ok", "stream": "ok"}
	if _, err := s.StreamState(ctx); err != nil {
		checks["nats"], checks["stream"] = err.Error(), "unknown"
	}
	if version, dirty, err := migrations.Version(ctx, s.pool); err != nil {
		checks["postgres"] = err.Error()
		checks["migrations"], checks["stream"] = "unknown", "unknown"
	} else if dirty || version != migrations.Latest() {
		checks["migrations"] = fmt.Sprintf("at version %d (dirty=%v), want %d", version, dirty, migrations.Latest())
	} else if checks["stream"] == "ok" {
		checks["stream"] = s.streamCheck(ctx)
	}
	status := http.StatusOK
	for _, v := range checks {
		if v != "ok" {
			status = http.StatusServiceUnavailable
		}
	}
	httpjson.Write(w, status, checks)
}

// streamCheck is "ok" when every projection follows the stream this
// service reaches, else why not. It reads only what that takes, so a probe
// stays cheap on a busy replica. A projection stalled by its consumer's
// failures does not fail it: those are retried, and a replica that is
// ready for ingest and queries should not flap with a database hiccup.
func (s *Service) streamCheck(ctx context.Context) string {
	if err := projections.FollowsStream(ctx, s.pool, s.streamPosition); err != nil {
		return err.Error()
	}
	return "ok"
}

// stalls tells, by projection, why this replica's consumers of it cannot
// apply: each stalled partition's last error, since when and after how many
// attempts.
func (s *Service) stalls() map[string]string {
	out := map[string]string{}
	for _, c := range s.consumers {
		for _, name := range c.Projections() {
			st := c.Stalled(name)
			if st == nil {
				continue
			}
			reason := fmt.Sprintf("cannot apply since %s", st.Since.UTC().Format(time.RFC3339))
			if st.Attempts > 0 {
				reason += fmt.Sprintf(" (%d attempts)", st.Attempts)
			}
			reason += ": " + st.Reason
			if parts := c.Partitions(); parts > 1 {
				reason = fmt.Sprintf("partition %d of %d %s", c.Partition(), parts, reason)
			}
			if prev, ok := out[name]; ok {
				reason = prev + "; " + reason
			}
			out[name] = reason
		}
	}
	return out
}

// GroupSyncDir is the embedded server's store directory when ingest puts
// every acknowledged append on disk (eventlog.GroupSync), else empty.
func (s *Service) GroupSyncDir() string {
	if s.groupSync == nil {
		return ""
	}
	return embeddedStoreDir(s.cfg)
}

// JetStream is the service's JetStream handle.
func (s *Service) JetStream() jetstream.JetStream { return s.js }

// StreamLastSeq is the event stream's last sequence.
func (s *Service) StreamLastSeq(ctx context.Context) (uint64, error) {
	st, err := s.StreamState(ctx)
	return st.LastSeq, err
}

// StreamState is the event stream's identity and last sequence.
func (s *Service) StreamState(ctx context.Context) (api.StreamState, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return api.StreamState{}, err
	}
	return api.StreamState{Identity: consumers.StreamIdentity(info), LastSeq: info.State.LastSeq}, nil
}

// verifyStream checks that the database follows the stream this service
// reaches, recording it on first start.
func (s *Service) verifyStream(ctx context.Context) error {
	return projections.VerifyStream(ctx, s.pool, s.streamPosition)
}

// streamPosition is the event stream's identity and last sequence, as
// projections.StreamPosition reads them.
func (s *Service) streamPosition(ctx context.Context) (projections.StreamIdentity, uint64, error) {
	st, err := s.StreamState(ctx)
	if err != nil {
		return st.Identity, 0, fmt.Errorf("read stream %s: %w", s.cfg.Stream, err)
	}
	return st.Identity, st.LastSeq, nil
}

// AdoptStream rebuilds every projection from the stream this service
// reaches, whatever stream the database followed, and then records that
// stream as the one the database follows. Run it with the service's
// consumers stopped (see OpenToAdopt); report sees each rebuild's progress.
func (s *Service) AdoptStream(ctx context.Context, report func(consumers.Progress)) error {
	st, err := s.StreamState(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", s.cfg.Stream, err)
	}
	for _, p := range projections.Every { // the key stage first: the policies wait for it
		rb, err := s.rebuilder.StartAdopting(ctx, s.configured(p))
		if err != nil {
			return err
		}
		if err := rb.Run(ctx, report); err != nil {
			return err
		}
	}
	if err := projections.AdoptStream(ctx, s.pool, st.Identity); err != nil {
		return err
	}
	s.log.Info().Str("stream", st.Identity.String()).Msg("the database now follows this stream")
	return nil
}

// StoredAt is when the first event at or after seq was stored.
func (s *Service) StoredAt(ctx context.Context, seq uint64) (time.Time, error) {
	m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.streamConfig().AllSubjects()))
	if err != nil {
		return time.Time{}, fmt.Errorf("read event at or after %d: %w", seq, err)
	}
	return m.Time, nil
}

// Lag is how many events the slowest projection is behind the stream; a
// checkpoint ahead of the stream counts as projections.OffStream, so 0
// means every projection is caught up.
func (s *Service) Lag(ctx context.Context) (uint64, error) {
	last, err := s.StreamLastSeq(ctx)
	if err != nil {
		return 0, err
	}
	return projections.Lag(ctx, s.pool, last)
}

// PartitionLastSeq is the sequence of partition's last event, 0 for none.
func (s *Service) PartitionLastSeq(ctx context.Context, partition int) (uint64, error) {
	return s.position().PartitionLastSeq(ctx, partition)
}

// Config is the service's configuration.
func (s *Service) Config() config.Config { return s.cfg }

// Pool is the database pool.
func (s *Service) Pool() *pgxpool.Pool { return s.pool }

// Close lets the consumers finish their current batch, stops rebuilds
// (leaving the live tables as they were), drains the NATS connection
// (flushing in-flight publishes), closes the pool and stops the embedded
// server. Call it after the HTTP server has shut down. When ctx ends first
// it stops waiting, closes everything at once and returns ctx's error.
func (s *Service) Close(ctx context.Context) error {
	s.stop()
	var errs []error
	if !waitUntil(ctx, func() { s.running.Wait() }) {
		errs = append(errs, fmt.Errorf("consumers and rebuilds still running: %w", ctx.Err()))
	}
	if s.nc != nil {
		closed := make(chan struct{})
		s.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := s.nc.Drain(); err != nil {
			s.nc.Close() // already closed, or cannot drain: nothing left to flush
		}
		if !s.nc.IsClosed() {
			select {
			case <-closed:
			case <-ctx.Done():
				s.nc.Close()
				errs = append(errs, fmt.Errorf("NATS publishes still in flight: %w", ctx.Err()))
			}
		}
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.groupSync != nil {
		s.groupSync.Close()
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
		if !waitUntil(ctx, s.embedded.WaitForShutdown) {
			errs = append(errs, fmt.Errorf("embedded NATS server still stopping: %w", ctx.Err()))
		}
	}
	if s.dataLock != nil {
		s.dataLock.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// waitUntil runs wait and reports whether it returned before ctx ended.
func waitUntil(ctx context.Context, wait func()) bool {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// ErrDataDirInUse is returned by Open when another process holds the
// embedded server's data directory.
var ErrDataDirInUse = errors.New("in use by another taskledger process")

// lockDir takes an exclusive lock on dir/taskledger.lock, held until the
// returned file is closed.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "taskledger.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s: %w (%w)", dir, ErrDataDirInUse, err)
	}
	return f, nil
}
