package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// ProjectionStatus is a projection's position, as GET /v1/projections
// reports it.
type ProjectionStatus struct {
	Name         string
	Checkpoint   uint64
	LagEvents    uint64
	LagSeconds   float64 // age of the oldest unapplied event; 0 when caught up
	DeadLetters  int     // unresolved
	RebuildRatio float64 // applied/target of the running rebuild; 0 when none runs
}

// StatusFunc reports every projection's position.
type StatusFunc func(ctx context.Context) ([]ProjectionStatus, error)

// statusTimeout bounds the status read at a scrape.
const statusTimeout = 5 * time.Second

// statusCollector reads the projections' positions at each scrape, so the
// gauges equal what GET /v1/projections answers at that moment. When the
// read fails, the last values read are reported again, and the failure is
// counted: a series never disappears.
type statusCollector struct {
	status StatusFunc

	checkpoint, lagEvents, lagSeconds, deadLetters, rebuild, failures *prometheus.Desc

	mu     sync.Mutex
	last   map[string]ProjectionStatus
	order  []string
	failed float64
}

func newStatusCollector(projections []string, status StatusFunc) *statusCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"projection"}, nil)
	}
	c := &statusCollector{
		status:      status,
		checkpoint:  desc("taskledger_projection_checkpoint", "The last stream sequence the projection applied."),
		lagEvents:   desc("taskledger_projection_lag_events", "Stream events the projection has not applied yet."),
		lagSeconds:  desc("taskledger_projection_lag_seconds", "Age of the oldest event the projection has not applied; 0 when caught up."),
		deadLetters: desc("taskledger_dead_letters", "Unresolved dead letters of the projection."),
		rebuild:     desc("taskledger_rebuild_progress_ratio", "Progress of the projection's running rebuild, 0 to 1; 0 when none runs."),
		failures: prometheus.NewDesc("taskledger_projection_status_failures_total",
			"Scrapes at which the projections' positions could not be read (the last values were reported).", nil, nil),
		last:  map[string]ProjectionStatus{},
		order: projections,
	}
	for _, p := range projections {
		c.last[p] = ProjectionStatus{Name: p}
	}
	return c
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.checkpoint, c.lagEvents, c.lagSeconds, c.deadLetters, c.rebuild, c.failures} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock() // one read at a time; concurrent scrapes wait for it
	defer c.mu.Unlock()
	if c.status != nil {
		ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
		statuses, err := c.status(ctx)
		cancel()
		if err != nil {
			c.failed++
		}
		for _, s := range statuses {
			if _, known := c.last[s.Name]; known && err == nil {
				c.last[s.Name] = s
			}
		}
	}
	gauge := func(d *prometheus.Desc, v float64, p string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, p)
	}
	for _, p := range c.order {
		s := c.last[p]
		gauge(c.checkpoint, float64(s.Checkpoint), p)
		gauge(c.lagEvents, float64(s.LagEvents), p)
		gauge(c.lagSeconds, s.LagSeconds, p)
		gauge(c.deadLetters, float64(s.DeadLetters), p)
		gauge(c.rebuild, s.RebuildRatio, p)
	}
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, c.failed)
}

// PoolStater is a Postgres pool; *pgxpool.Pool is one.
type PoolStater interface {
	Stat() *pgxpool.Stat
}

// poolCollector reports a pgx pool's statistics at each scrape.
type poolCollector struct {
	pool    PoolStater
	metrics []poolMetric
}

type poolMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*pgxpool.Stat) float64
}

func newPoolCollector(pool PoolStater) *poolCollector {
	metric := func(name, help string, kind prometheus.ValueType, value func(*pgxpool.Stat) float64) poolMetric {
		return poolMetric{prometheus.NewDesc("taskledger_postgres_pool_"+name, help, nil, nil), kind, value}
	}
	return &poolCollector{pool: pool, metrics: []poolMetric{
		metric("acquired_connections", "Connections in use.", prometheus.GaugeValue,
			func(s *pgxpool.Stat) float64 { return float64(s.AcquiredConns()) }),
		metric("idle_connections", "Idle connections.", prometheus.GaugeValue,
			func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) }),
		metric("total_connections", "Open connections, including those being opened.", prometheus.GaugeValue,
			func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) }),
		metric("max_connections", "The pool's size limit.", prometheus.GaugeValue,
			func(s *pgxpool.Stat) float64 { return float64(s.MaxConns()) }),
		metric("acquires_total", "Connections acquired from the pool.", prometheus.CounterValue,
			func(s *pgxpool.Stat) float64 { return float64(s.AcquireCount()) }),
		metric("acquire_wait_seconds_total", "Time spent acquiring connections.", prometheus.CounterValue,
			func(s *pgxpool.Stat) float64 { return s.AcquireDuration().Seconds() }),
		metric("empty_acquires_total", "Acquires that had to wait because no connection was idle.", prometheus.CounterValue,
			func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) }),
		metric("canceled_acquires_total", "Acquires given up by their caller.", prometheus.CounterValue,
			func(s *pgxpool.Stat) float64 { return float64(s.CanceledAcquireCount()) }),
	}}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.metrics {
		ch <- g.desc
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	for _, g := range c.metrics {
		ch <- prometheus.MustNewConstMetric(g.desc, g.kind, g.value(s))
	}
}
