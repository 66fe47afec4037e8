// Package metrics is taskledger's Prometheus instrumentation: the metrics
// the README lists and the ones an operator needs to see trouble coming.
// Everything registers on a registry the caller passes in, never the global
// one, so several services can live in one process.
//
// Components record through typed methods of *Metrics. Every method is safe
// on a nil *Metrics and then records nothing, so packages can be used and
// tested without instrumentation.
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Webhook outcomes, the outcome label of taskledger_webhooks_total.
const (
	OutcomeAccepted    = "accepted"
	OutcomeDuplicate   = "duplicate"
	OutcomeRejected    = "rejected"
	OutcomeUnavailable = "unavailable"
)

// Publish outcomes, the outcome label of the JetStream publish histogram.
const (
	PublishStored    = "stored"
	PublishDuplicate = "duplicate"
	PublishFailed    = "failed"
)

// Dedup tiers that answer a re-send with 200 duplicate at ingest. The third
// tier, the projections' own, is counted per projection in
// taskledger_projection_duplicates_total.
const (
	TierJetStreamWindow = "jetstream_window"
	TierDurable         = "durable"
)

// TierKeyStage labels taskledger_resend_delay_seconds for re-sends that
// were stored again and that the key stage found repeating an original.
const TierKeyStage = "key_stage"

// Options configures New.
type Options struct {
	// Projections are the projection names; their series exist from the start.
	Projections []string
	// Sources are the configured webhook sources; empty allows any valid
	// name, up to MaxSourceLabels distinct ones.
	Sources []string
	// Status reports the projections' positions at each scrape.
	Status StatusFunc
	// Pool reports Postgres pool statistics at each scrape; nil for none.
	Pool PoolStater
}

// Metrics records taskledger's metrics on one registry.
type Metrics struct {
	reg     *prometheus.Registry
	sources *sourceLabels

	webhooks          *prometheus.CounterVec
	webhookDuration   *prometheus.HistogramVec
	httpRequests      *prometheus.CounterVec
	publishDuration   *prometheus.HistogramVec
	dedupHits         *prometheus.CounterVec
	resendDelay       *prometheus.HistogramVec
	signatureFailures *prometheus.CounterVec

	eventsApplied   *prometheus.CounterVec
	batchSize       *prometheus.HistogramVec
	applyDuration   *prometheus.HistogramVec
	duplicates      *prometheus.CounterVec
	consumerRestart *prometheus.CounterVec
}

// New registers taskledger's metrics, the Go runtime's and the process's on
// reg.
func New(reg *prometheus.Registry, opts Options) *Metrics {
	m := &Metrics{
		reg:     reg,
		sources: newSourceLabels(opts.Sources),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_webhooks_total",
			Help: "Webhook deliveries by source and outcome (accepted, duplicate, rejected, unavailable).",
		}, []string{"source", "outcome"}),
		webhookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "taskledger_webhook_duration_seconds",
			Help:    "Time to answer a webhook delivery, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to 16 s
		}, []string{"outcome"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		publishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "taskledger_jetstream_publish_duration_seconds",
			Help:    "Time from publishing an event to JetStream's acknowledgement, by outcome (stored, duplicate, failed).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16), // 0.2 ms to 6.5 s
		}, []string{"outcome"}),
		dedupHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_dedup_hits_total",
			Help: "Re-sends answered 200 duplicate, by the dedup tier that recognised them (jetstream_window, durable).",
		}, []string{"tier"}),
		resendDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "taskledger_resend_delay_seconds",
			Help: "How late re-sends arrive: time from storing the original event to its duplicate's arrival, " +
				"by the tier that caught it (jetstream_window, durable, key_stage).",
			Buckets: []float64{1, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600,
				24 * 3600, 72 * 3600, 7 * 24 * 3600},
		}, []string{"tier"}),
		signatureFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_signature_failures_total",
			Help: "Webhook deliveries refused for a missing, wrong or expired signature, by source.",
		}, []string{"source"}),
		eventsApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_projection_events_applied_total",
			Help: "Events a projection's consumer has committed (including duplicates and dead letters it passed).",
		}, []string{"projection"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "taskledger_projection_batch_size",
			Help:    "Events per batch a projection's consumer applied in one transaction.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000},
		}, []string{"projection"}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "taskledger_projection_apply_duration_seconds",
			Help:    "Time to apply and commit one batch, by projection.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"projection"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_projection_duplicates_total",
			Help: "Events a projection dropped because it had seen their dedup key (the third dedup tier).",
		}, []string{"projection"}),
		consumerRestart: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "taskledger_consumer_restarts_total",
			Help: "Times a projection's consumer failed and started again from its checkpoint.",
		}, []string{"projection"}),
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.webhooks, m.webhookDuration, m.httpRequests, m.publishDuration, m.dedupHits, m.resendDelay,
		m.signatureFailures, m.eventsApplied, m.batchSize, m.applyDuration, m.duplicates, m.consumerRestart,
		newStatusCollector(opts.Projections, opts.Status))
	if opts.Pool != nil {
		reg.MustRegister(newPoolCollector(opts.Pool))
	}
	m.initSeries(opts)
	return m
}

// initSeries creates the series dashboards and alerts rely on, at zero.
func (m *Metrics) initSeries(opts Options) {
	var sources []string
	if len(opts.Sources) > 0 {
		sources = append(slices.Clone(opts.Sources), OtherSource)
	}
	for _, s := range sources {
		m.signatureFailures.WithLabelValues(s)
	}
	for _, o := range []string{OutcomeAccepted, OutcomeDuplicate, OutcomeRejected, OutcomeUnavailable} {
		m.webhookDuration.WithLabelValues(o)
		for _, s := range sources {
			m.webhooks.WithLabelValues(s, o)
		}
	}
	for _, o := range []string{PublishStored, PublishDuplicate, PublishFailed} {
		m.publishDuration.WithLabelValues(o)
	}
	for _, t := range []string{TierJetStreamWindow, TierDurable} {
		m.dedupHits.WithLabelValues(t)
		m.resendDelay.WithLabelValues(t)
	}
	m.resendDelay.WithLabelValues(TierKeyStage)
	for _, p := range opts.Projections {
		m.eventsApplied.WithLabelValues(p)
		m.batchSize.WithLabelValues(p)
		m.applyDuration.WithLabelValues(p)
		m.duplicates.WithLabelValues(p)
		m.consumerRestart.WithLabelValues(p)
	}
}

// Handler serves the registry in the Prometheus text format. A collector
// that fails leaves its metrics out; the rest are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Published records one JetStream publish and its outcome.
func (m *Metrics) Published(outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.publishDuration.WithLabelValues(outcome).Observe(took.Seconds())
}

// Deduplicated records a re-send answered 200 duplicate by tier. original
// is when the original event was stored; zero when unknown.
func (m *Metrics) Deduplicated(tier string, original, now time.Time) {
	if m == nil {
		return
	}
	m.dedupHits.WithLabelValues(tier).Inc()
	if !original.IsZero() {
		m.ResendDelayed(tier, now.Sub(original))
	}
}

// ResendDelayed records how long after its original a re-send caught by
// tier came.
func (m *Metrics) ResendDelayed(tier string, delay time.Duration) {
	if m == nil {
		return
	}
	m.resendDelay.WithLabelValues(tier).Observe(max(delay, 0).Seconds())
}

// StoredResends records re-sends that were stored again (ingest could not
// answer them as duplicates) and that the live key stage dropped, each by
// how long after its original it was stored.
func (m *Metrics) StoredResends(delays []time.Duration) {
	if m == nil {
		return
	}
	for _, d := range delays {
		m.ResendDelayed(TierKeyStage, d)
	}
}

// BatchApplied records a batch a projection's consumer committed: size
// messages fetched, applied of them above the checkpoint, duplicates of
// those dropped by the projection's dedup tier.
func (m *Metrics) BatchApplied(projection string, size, applied, duplicates int, took time.Duration) {
	if m == nil {
		return
	}
	m.batchSize.WithLabelValues(projection).Observe(float64(size))
	m.applyDuration.WithLabelValues(projection).Observe(took.Seconds())
	m.eventsApplied.WithLabelValues(projection).Add(float64(applied))
	m.duplicates.WithLabelValues(projection).Add(float64(duplicates))
}

// ConsumerRestarted records a projection's consumer starting over after a
// failure.
func (m *Metrics) ConsumerRestarted(projection string) {
	if m == nil {
		return
	}
	m.consumerRestart.WithLabelValues(projection).Inc()
}

// webhookOutcome classifies a webhook answer by its status code.
func webhookOutcome(status int) string {
	switch {
	case status == http.StatusAccepted:
		return OutcomeAccepted
	case status == http.StatusOK:
		return OutcomeDuplicate
	case status == http.StatusTooManyRequests || status >= 500:
		return OutcomeUnavailable
	default:
		return OutcomeRejected
	}
}

// Webhooks counts and times the deliveries next answers, by source (from
// the {source} path value) and outcome; a 401 also counts as a signature
// failure of the source.
func (m *Metrics) Webhooks(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		outcome, source := webhookOutcome(rec.status), m.sources.label(r.PathValue("source"))
		m.webhooks.WithLabelValues(source, outcome).Inc()
		m.webhookDuration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
		if rec.status == http.StatusUnauthorized {
			m.signatureFailures.WithLabelValues(source).Inc()
		}
	})
}

// HTTP counts the requests mux answers by its matched route pattern and
// status code. It must wrap the ServeMux directly: the mux records the
// pattern on the request it is given.
func (m *Metrics) HTTP(mux http.Handler) http.Handler {
	if m == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		mux.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.httpRequests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
	})
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush sends what was written so far, for streamed answers.
func (r *statusRecorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }
