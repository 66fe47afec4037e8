package integration_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/taskledger/taskledger/internal/config"
)

// deployDir holds the Prometheus and Grafana configuration.
const deployDir = "../deploy"

// metricName matches the metric names taskledger's queries use: the
// service's own and the Go and process collectors'. Label names and values
// never match (they have no such prefix), so every match is a metric.
var metricName = regexp.MustCompile(`\b(?:taskledger|go|process)_[a-z0-9_]+\b`)

// grafanaVariables are the interval variables Grafana replaces in queries.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// metricNames returns the metric names expr reads; it fails t when expr
// names none.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	names := metricName.FindAllString(grafanaVariables.Replace(expr), -1)
	if len(names) == 0 {
		t.Errorf("%q reads no taskledger metric", expr)
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "[") != strings.Count(expr, "]") {
		t.Errorf("%q: unbalanced brackets", expr)
	}
	return names
}

// rulesFile is the shape of a Prometheus rules file.
type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// readRules parses the rules file strictly and checks each alert has what
// Prometheus and an operator need: an expression, a duration, a severity
// and a summary.
func readRules(t *testing.T) rulesFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus/taskledger.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules rulesFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("rules file: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if _, err := model.ParseDuration(r.For); err != nil || r.Alert == "" || r.Expr == "" ||
				r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: want an alert name, expr, for (%v), severity and summary", r, err)
			}
		}
	}
	return rules
}

// exported reports whether name is a series the scrape holds: a family,
// or a histogram's _bucket, _sum or _count.
func (s scrape) exported(name string) bool {
	if s[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && s[base].GetType() == dto.MetricType_HISTOGRAM {
			return true
		}
	}
	return false
}

// dashboardQueries reads every panel query of the Grafana dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "grafana/dashboards/taskledger.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without a uid or panels")
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	return exprs
}

func TestDashboardAndAlertsQueryExportedMetrics(t *testing.T) {
	t.Parallel()
	// With sources configured, their series exist before any delivery.
	b := setup(t, func(c *config.Config) { c.Sources = []string{"tallyfy"} })
	b.get(t, "/healthz") // a request, so that the HTTP counter has a series
	exported := b.scrape(t)

	exprs := dashboardQueries(t)
	var alerts []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	slices.Sort(alerts)
	if want := []string{"TaskledgerDeadLetters", "TaskledgerHTTP5xxRate", "TaskledgerProjectionLagging"}; !slices.Equal(alerts, want) {
		t.Errorf("alerts %v, want %v", alerts, want)
	}

	seen := map[string]bool{}
	for _, expr := range exprs {
		for _, name := range metricNames(t, expr) {
			seen[name] = true
			if !exported.exported(name) {
				t.Errorf("%q: the service exports no %s", expr, name)
			}
		}
	}
	// The dashboard covers what the issue asks an operator to see.
	for _, name := range []string{"taskledger_webhooks_total", "taskledger_webhook_duration_seconds_bucket",
		"taskledger_projection_lag_seconds", "taskledger_dead_letters", "taskledger_rebuild_progress_ratio"} {
		if !seen[name] {
			t.Errorf("no dashboard query or alert reads %s", name)
		}
	}
}
