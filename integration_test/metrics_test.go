package integration_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/metrics"
	"github.com/taskledger/taskledger/projections"
)

// scrape is one reading of GET /metrics, by metric name.
type scrape map[string]*dto.MetricFamily

// scrape reads and parses b's /metrics.
func (b *bundle) scrape(t *testing.T) scrape {
	t.Helper()
	resp, err := http.Get(b.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: %d %s, want 200 in the text format", resp.StatusCode, ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// find returns the series of name with the given labels (name, value
// pairs), or nil.
func (s scrape) find(name string, labels ...string) *dto.Metric {
	f := s[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a series' value: a counter's or gauge's value, a histogram's
// count. It fails t when the series is missing.
func (s scrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := s.find(name, labels...)
	if m == nil {
		t.Fatalf("no series %s%v", name, labels)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("series %s%v has no value", name, labels)
	return 0
}

// delta is how much a series grew from before to after; a series absent
// before counts from 0, one absent after fails t.
func delta(t *testing.T, before, after scrape, name string, labels ...string) float64 {
	t.Helper()
	var was float64
	if before.find(name, labels...) != nil {
		was = before.value(t, name, labels...)
	}
	return after.value(t, name, labels...) - was
}

type projectionMetricsView struct {
	Name        string  `json:"name"`
	Checkpoint  uint64  `json:"checkpoint"`
	Lag         uint64  `json:"lag"`
	LagSeconds  float64 `json:"lag_seconds"`
	DeadLetters int     `json:"dead_letters"`
	State       string  `json:"state"`
	Rebuild     *struct {
		Outcome    string  `json:"outcome"`
		AppliedSeq uint64  `json:"applied_seq"`
		TargetSeq  uint64  `json:"target_seq"`
		Percent    float64 `json:"percent"`
	} `json:"rebuild"`
}

// projectionViews reads GET /v1/projections.
func (b *bundle) projectionViews(t *testing.T) []projectionMetricsView {
	t.Helper()
	var body struct {
		Projections []projectionMetricsView `json:"projections"`
	}
	getJSON(t, b.url+"/v1/projections", &body)
	if len(body.Projections) != len(projections.Every) {
		t.Fatalf("projections %+v, want %d", body.Projections, len(projections.Every))
	}
	return body.Projections
}

// contractMetrics are the metrics of CONTRACT.md section 5: each one's
// type and exact label names.
var contractMetrics = map[string]struct {
	kind   dto.MetricType
	labels []string
}{
	"taskledger_webhooks_total":                  {dto.MetricType_COUNTER, []string{"outcome", "source"}},
	"taskledger_webhook_duration_seconds":        {dto.MetricType_HISTOGRAM, []string{"outcome"}},
	"taskledger_projection_checkpoint":           {dto.MetricType_GAUGE, []string{"projection"}},
	"taskledger_projection_lag_events":           {dto.MetricType_GAUGE, []string{"projection"}},
	"taskledger_projection_lag_seconds":          {dto.MetricType_GAUGE, []string{"projection"}},
	"taskledger_projection_events_applied_total": {dto.MetricType_COUNTER, []string{"projection"}},
	"taskledger_dead_letters":                    {dto.MetricType_GAUGE, []string{"projection"}},
	"taskledger_rebuild_progress_ratio":          {dto.MetricType_GAUGE, []string{"projection"}},
}

// checkContractMetrics checks that s has every contract metric, of its
// type, each series with exactly its label names, and outcomes among the
// contract's four.
func checkContractMetrics(t *testing.T, s scrape) {
	t.Helper()
	outcomes := []string{metrics.OutcomeAccepted, metrics.OutcomeDuplicate, metrics.OutcomeRejected, metrics.OutcomeUnavailable}
	for name, want := range contractMetrics {
		f := s[name]
		if f == nil || len(f.Metric) == 0 {
			t.Errorf("no series of %s", name)
			continue
		}
		if f.GetType() != want.kind {
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), want.kind)
		}
		for _, m := range f.Metric {
			var names []string
			for _, l := range m.Label {
				names = append(names, l.GetName())
				if l.GetName() == "outcome" && !slices.Contains(outcomes, l.GetValue()) {
					t.Errorf("%s has outcome %q, want one of %v", name, l.GetValue(), outcomes)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, want.labels) {
				t.Errorf("%s has a series labelled %v, want exactly %v", name, names, want.labels)
			}
		}
	}
}

// checkGaugesMatchAPI compares the per-projection gauges of a scrape with
// GET /v1/projections read just before it, with nothing moving between.
func checkGaugesMatchAPI(t *testing.T, views []projectionMetricsView, s scrape) {
	t.Helper()
	for _, v := range views {
		p := []string{"projection", v.Name}
		// As documented: applied/target of a running rebuild, 1 while it
		// has nothing to apply, 0 when none runs.
		ratio := 0.0
		if rb := v.Rebuild; rb != nil && rb.Outcome == "running" {
			ratio = 1
			if rb.TargetSeq > 0 {
				ratio = float64(rb.AppliedSeq) / float64(rb.TargetSeq)
			}
		}
		for _, c := range []struct {
			name string
			want float64
		}{
			{"taskledger_projection_checkpoint", float64(v.Checkpoint)},
			{"taskledger_projection_lag_events", float64(v.Lag)},
			{"taskledger_dead_letters", float64(v.DeadLetters)},
			{"taskledger_rebuild_progress_ratio", ratio},
		} {
			if got := s.value(t, c.name, p...); got != c.want {
				t.Errorf("%s{%s} = %v, /v1/projections says %v", c.name, v.Name, got, c.want)
			}
		}
		// The oldest unapplied event only ages between the two reads.
		lag := s.value(t, "taskledger_projection_lag_seconds", p...)
		if (v.Lag == 0) != (lag == 0) || lag < v.LagSeconds || lag > v.LagSeconds+waitLimit.Seconds() {
			t.Errorf("lag seconds of %s: metric %v, /v1/projections %v (lag %d events)", v.Name, lag, v.LagSeconds, v.Lag)
		}
	}
}

func TestMetricsCountAKnownSequenceOfRequests(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, func(c *config.Config) { c.Sources = []string{"tallyfy", "github"} })
	before := b.scrape(t)

	const at = "2024-01-15T10:30:00Z"
	for _, step := range []struct {
		source, body string
		status       int
	}{
		{"tallyfy", completion("m1", at), http.StatusAccepted},
		{"tallyfy", completion("m2", at), http.StatusAccepted},
		{"tallyfy", completion("m1", at), http.StatusOK},
		{"tallyfy", `{"event":"task.completed"}`, http.StatusUnprocessableEntity},
		{"github", completion("m3", at), http.StatusAccepted},
		{"github", `{not json`, http.StatusBadRequest},
		{"unlisted", completion("m4", at), http.StatusNotFound},
	} {
		if r := b.post(t, step.source, step.body); r.Status != step.status {
			t.Fatalf("post %s to %s: %+v, want %d", step.body, step.source, r, step.status)
		}
	}
	b.waitCaughtUp(t)
	views := b.projectionViews(t)
	after := b.scrape(t)

	for _, c := range []struct {
		source, outcome string
		want            float64
	}{
		{"tallyfy", "accepted", 2}, {"tallyfy", "duplicate", 1}, {"tallyfy", "rejected", 1}, {"tallyfy", "unavailable", 0},
		{"github", "accepted", 1}, {"github", "duplicate", 0}, {"github", "rejected", 1},
		{metrics.OtherSource, "rejected", 1}, {metrics.OtherSource, "accepted", 0},
	} {
		if got := delta(t, before, after, "taskledger_webhooks_total", "source", c.source, "outcome", c.outcome); got != c.want {
			t.Errorf("webhooks from %s %s: +%v, want +%v", c.source, c.outcome, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"taskledger_webhook_duration_seconds", []string{"outcome", "accepted"}, 3},
		{"taskledger_webhook_duration_seconds", []string{"outcome", "duplicate"}, 1},
		{"taskledger_webhook_duration_seconds", []string{"outcome", "rejected"}, 3},
		{"taskledger_jetstream_publish_duration_seconds", []string{"outcome", "stored"}, 3},
		{"taskledger_jetstream_publish_duration_seconds", []string{"outcome", "duplicate"}, 1},
		{"taskledger_jetstream_publish_duration_seconds", []string{"outcome", "failed"}, 0},
		{"taskledger_dedup_hits_total", []string{"tier", "jetstream_window"}, 1},
		{"taskledger_dedup_hits_total", []string{"tier", "durable"}, 0},
		{"taskledger_resend_delay_seconds", []string{"tier", "key_stage"}, 0},
		{"taskledger_http_requests_total", []string{"route", "POST /v1/webhooks/{source}", "code", "202"}, 3},
		{"taskledger_http_requests_total", []string{"route", "POST /v1/webhooks/{source}", "code", "404"}, 1},
	} {
		if got := delta(t, before, after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v: +%v, want +%v", c.name, c.labels, got, c.want)
		}
	}
	// The re-send's key is derived: its delay is observed once its original
	// has been read back, after the answer.
	eventually(t, "the re-send's delay to be observed", func() bool {
		return delta(t, before, b.scrape(t), "taskledger_resend_delay_seconds", "tier", metrics.TierJetStreamWindow) == 1
	})
	for _, p := range projections.Every {
		if got := delta(t, before, after, "taskledger_projection_events_applied_total", "projection", p.Name); got != 3 {
			t.Errorf("events applied by %s: +%v, want +3", p.Name, got)
		}
		if got := delta(t, before, after, "taskledger_projection_batch_size", "projection", p.Name); got < 1 {
			t.Errorf("no batch of %s observed", p.Name)
		}
	}
	checkGaugesMatchAPI(t, views, after)
	checkContractMetrics(t, after)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "taskledger_postgres_pool_max_connections"} {
		if after[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

func TestMetricsSeriesExistFromStartAndFollowTheProjections(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	start := b.scrape(t)
	for _, p := range projections.Every {
		for _, name := range []string{"taskledger_projection_checkpoint", "taskledger_projection_lag_events",
			"taskledger_projection_lag_seconds", "taskledger_projection_events_applied_total", "taskledger_dead_letters",
			"taskledger_rebuild_progress_ratio", "taskledger_projection_batch_size",
			"taskledger_projection_apply_duration_seconds", "taskledger_projection_duplicates_total",
			"taskledger_consumer_restarts_total"} {
			if got := start.value(t, name, "projection", p.Name); got != 0 {
				t.Errorf("%s{%s} = %v at start, want 0", name, p.Name, got)
			}
		}
	}
	for _, o := range []string{"accepted", "duplicate", "rejected", "unavailable"} {
		start.value(t, "taskledger_webhook_duration_seconds", "outcome", o)
	}

	// Consumers stopped: the events wait, and age.
	b.publishRaw(t, "tallyfy", []byte("not json"))
	b.accept(t, completion("lagging", "2024-01-15T10:30:00Z"))
	eventually(t, "the oldest unapplied event to age", func() bool {
		return b.projectionViews(t)[0].LagSeconds > 0
	})
	views := b.projectionViews(t)
	checkGaugesMatchAPI(t, views, b.scrape(t))
	for _, v := range views {
		if v.Lag != 2 {
			t.Errorf("%s lag %d, want 2", v.Name, v.Lag)
		}
	}

	// The policies wait for the key stage: with the consumers stopped,
	// rebuild it first.
	keys, err := b.svc.StartRebuild(context.Background(), projections.EventKeys)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Run(context.Background(), func(consumers.Progress) {}); err != nil {
		t.Fatal(err)
	}

	// A rebuild with nothing to apply, then half-way: its progress is the
	// ratio /v1/projections shows.
	p := projections.All[0]
	rb, err := b.svc.Rebuilder().Start(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		applied, target uint64
		want            float64
	}{{0, 0, 1}, {1, 2, 0.5}} {
		if err := p.RecordProgress(context.Background(), b.svc.Pool(), c.applied, c.target); err != nil {
			t.Fatal(err)
		}
		views = b.projectionViews(t)
		s := b.scrape(t)
		checkGaugesMatchAPI(t, views, s)
		if got := s.value(t, "taskledger_rebuild_progress_ratio", "projection", p.Name); got != c.want {
			t.Errorf("rebuild progress at %d of %d: %v, want %v", c.applied, c.target, got, c.want)
		}
	}
	if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
		t.Fatal(err)
	}

	b.svc.Start()
	b.waitCaughtUp(t)
	views = b.projectionViews(t)
	s := b.scrape(t)
	checkGaugesMatchAPI(t, views, s)
	for _, v := range views {
		// The undecodable event is a dead letter of each policy; it
		// belongs to no task's timeline, and has no key to keep.
		wantDead := 1
		if v.Name == projections.Timeline.Name || v.Name == projections.EventKeys.Name {
			wantDead = 0
		}
		if v.DeadLetters != wantDead || v.Lag != 0 || v.LagSeconds != 0 {
			t.Errorf("%+v, want %d dead letters and no lag", v, wantDead)
		}
	}
}

func TestMetricsCountConsumerRestarts(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	b.waitApplied(t, b.accept(t, completion("restart", "2024-01-15T10:30:00Z")))
	before := b.scrape(t)
	if n, err := b.killSessions(anySession, b.consumerSessions()...); err != nil || n != len(b.consumerSessions()) {
		t.Fatalf("killed %d consumer sessions (%v), want %d", n, err, len(b.consumerSessions()))
	}
	// The next batch finds its session gone; the consumer starts over.
	b.waitApplied(t, b.accept(t, completion("restart", "2024-01-16T10:30:00Z")))
	after := b.scrape(t)
	for _, p := range projections.Every {
		// At least the restart the kill caused; a reconnect refused by a
		// busy server adds more.
		if got := delta(t, before, after, "taskledger_consumer_restarts_total", "projection", p.Name); got < 1 {
			t.Errorf("restarts of %s: +%v, want at least +1", p.Name, got)
		}
	}
}

func TestMetricsCountSignatureFailuresBySource(t *testing.T) {
	t.Parallel()
	b := setupSigned(t)
	before := b.scrape(t)
	body := completion("unsigned", "2024-01-15T10:30:00Z")
	for _, source := range []string{"github", "github", "tallyfy"} {
		if r := b.post(t, source, body); r.Status != http.StatusUnauthorized {
			t.Fatalf("unsigned delivery to %s: %+v, want 401", source, r)
		}
	}
	if r := b.post(t, "stripe", body); r.Status != http.StatusAccepted {
		t.Fatalf("unsigned delivery to a source without a scheme: %+v", r)
	}
	after := b.scrape(t)
	for source, want := range map[string]float64{"github": 2, "tallyfy": 1, "stripe": 0} {
		if got := delta(t, before, after, "taskledger_signature_failures_total", "source", source); got != want {
			t.Errorf("signature failures of %s: +%v, want +%v", source, got, want)
		}
		if got := delta(t, before, after, "taskledger_webhooks_total", "source", source, "outcome", "rejected"); got != want {
			t.Errorf("rejected from %s: +%v, want +%v", source, got, want)
		}
	}
}
