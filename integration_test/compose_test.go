package integration_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/taskledger/taskledger/internal/testenv"
)

// composeService is the part of a docker-compose.yml service the checks
// below read.
type composeService struct {
	Profiles    []string          `yaml:"profiles"`
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Volumes     []string          `yaml:"volumes"`
	Build       any               `yaml:"build"`
	Restart     string            `yaml:"restart"`
	Ports       []string          `yaml:"ports"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// TestComposeFile checks what docker-compose.yml promises an operator:
// every service restarts and has a healthcheck, services start after the
// ones they need are healthy, images are pinned to the versions the tests
// pass against, nothing without authentication is published beyond
// loopback, and no admin token is set by default.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	file := readCompose(t)
	if len(file.Services) == 0 {
		t.Fatal("no services")
	}
	pinned := map[string]string{"postgres": testenv.PostgresImage, "nats": testenv.NATSImage}
	for name, svc := range file.Services {
		if svc.Restart != "unless-stopped" {
			t.Errorf("%s: restart %q, want unless-stopped", name, svc.Restart)
		}
		if svc.Healthcheck == nil || len(svc.Healthcheck.Test) == 0 {
			t.Errorf("%s: no healthcheck", name)
		}
		for dep, d := range svc.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("%s: depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
		if svc.Image != "" {
			repo, tag, _ := strings.Cut(svc.Image, ":")
			if !regexp.MustCompile(`^v?\d+\.\d+\.\d+`).MatchString(tag) && !regexp.MustCompile(`^\d+\.\d+(-|$)`).MatchString(tag) {
				t.Errorf("%s: image %s is not pinned to a version", name, svc.Image)
			}
			if want, ok := pinned[repo]; ok && svc.Image != want {
				t.Errorf("%s: image %s, want %s (what the tests pass against)", name, svc.Image, want)
			}
		}
		if svc.Build != nil && (svc.Healthcheck == nil || !slices.Equal(svc.Healthcheck.Test, []string{"CMD", "/taskledger", "healthcheck"})) {
			t.Errorf("%s: the taskledger image has no curl; want the healthcheck command", name)
		}
		unauthenticated := svc.Build == nil // Postgres trusts, NATS has no users
		for _, p := range svc.Ports {
			if unauthenticated && !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %s published on every interface", name, p)
			}
		}
		if token, ok := svc.Environment["TASKLEDGER_ADMIN_TOKEN"]; ok && token != "${TASKLEDGER_ADMIN_TOKEN:-}" && token != "${TASKLEDGER_ADMIN_TOKEN}" {
			t.Errorf("%s: TASKLEDGER_ADMIN_TOKEN is %q: no default token on a published port", name, token)
		}
	}
	ignored, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatalf("no .dockerignore: the build context would ship .git, data and bin: %v", err)
	}
	for _, want := range []string{".git", "data/", "bin/"} {
		if !slices.Contains(strings.Fields(string(ignored)), want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file composeFile
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	return file
}

// flagValue is the value after flag in a command line, "" when absent.
func flagValue(cmd []string, flag string) string {
	if i := slices.Index(cmd, flag); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

// TestComposeClusterProfile checks what `docker compose --profile cluster
// config` cannot: that the cluster profile's three NATS nodes route to each
// other under one cluster name with volumes of their own, that both
// taskledger replicas reach all three with an R3 stream, the same
// partitions and a database of their own, and that the load balancer
// forwards to both.
func TestComposeClusterProfile(t *testing.T) {
	t.Parallel()
	f := readCompose(t)
	inCluster := func(name string) composeService {
		t.Helper()
		s, ok := f.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if !slices.Contains(s.Profiles, "cluster") {
			t.Errorf("%s is not in the cluster profile: %v", name, s.Profiles)
		}
		return s
	}

	nodes := []string{"nats-1", "nats-2", "nats-3"}
	var clientURLs []string
	volumes := map[string]bool{}
	for _, name := range nodes {
		s := inCluster(name)
		if !slices.Contains(s.Command, "-js") || flagValue(s.Command, "--name") != name ||
			flagValue(s.Command, "--cluster_name") != "taskledger" || flagValue(s.Command, "--cluster") != "nats://0.0.0.0:6222" {
			t.Errorf("%s command %v: want JetStream, --name %s, --cluster_name taskledger, --cluster on 6222", name, s.Command, name)
		}
		var wantRoutes []string
		for _, other := range nodes {
			if other != name {
				wantRoutes = append(wantRoutes, "nats://"+other+":6222")
			}
		}
		if got := flagValue(s.Command, "--routes"); got != strings.Join(wantRoutes, ",") {
			t.Errorf("%s routes %q, want %q", name, got, strings.Join(wantRoutes, ","))
		}
		store := flagValue(s.Command, "-sd")
		volume, mount, _ := strings.Cut(strings.Join(s.Volumes, ","), ":")
		if _, declared := f.Volumes[volume]; len(s.Volumes) != 1 || mount != store || !declared || volumes[volume] {
			t.Errorf("%s volumes %v: want a declared volume of its own on its store dir %s", name, s.Volumes, store)
		}
		volumes[volume] = true
		if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), ":"+flagValue(s.Command, "-m")+"/healthz") {
			t.Errorf("%s healthcheck %+v: want /healthz on its monitoring port %q", name, s.Healthcheck, flagValue(s.Command, "-m"))
		}
		clientURLs = append(clientURLs, "nats://"+name+":4222")
	}

	replicas := []string{"taskledger-1", "taskledger-2"}
	first := inCluster(replicas[0]).Environment
	for _, name := range replicas {
		s := inCluster(name)
		env := s.Environment
		if env["TASKLEDGER_NATS_URL"] != strings.Join(clientURLs, ",") {
			t.Errorf("%s TASKLEDGER_NATS_URL %q, want every node %q", name, env["TASKLEDGER_NATS_URL"], strings.Join(clientURLs, ","))
		}
		if env["TASKLEDGER_STREAM_REPLICAS"] != "3" {
			t.Errorf("%s TASKLEDGER_STREAM_REPLICAS %q, want 3", name, env["TASKLEDGER_STREAM_REPLICAS"])
		}
		if env["TASKLEDGER_PARTITIONS"] == "" || env["TASKLEDGER_PARTITIONS"] == "1" ||
			env["TASKLEDGER_PARTITIONS"] != first["TASKLEDGER_PARTITIONS"] || env["TASKLEDGER_DATABASE_URL"] != first["TASKLEDGER_DATABASE_URL"] {
			t.Errorf("%s partitions %q and database %q: want the same on every replica, and more than one partition",
				name, env["TASKLEDGER_PARTITIONS"], env["TASKLEDGER_DATABASE_URL"])
		}
		for _, dep := range append([]string{"postgres"}, nodes...) {
			if _, ok := s.DependsOn[dep]; !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
		}
		if len(s.Ports) != 0 {
			t.Errorf("%s publishes ports %v; the replicas are reached through the load balancer", name, s.Ports)
		}
	}
	if first["TASKLEDGER_DATABASE_URL"] == f.Services["taskledger"].Environment["TASKLEDGER_DATABASE_URL"] {
		t.Error("the cluster replicas share the default profile's database, which follows another stream")
	}

	lb := inCluster("lb")
	if !regexp.MustCompile(`^(nginx|caddy):\d+\.\d+[\w.-]*$`).MatchString(lb.Image) {
		t.Errorf("load balancer image %q: want an official nginx or caddy image pinned to a version", lb.Image)
	}
	var conf []byte
	for _, v := range lb.Volumes {
		if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
			var err error
			if conf, err = os.ReadFile("../" + src); err != nil {
				t.Fatalf("load balancer configuration: %v", err)
			}
		}
	}
	listen := regexp.MustCompile(`listen\s+(\d+);`).FindSubmatch(conf)
	if len(lb.Ports) != 1 || len(listen) < 2 || !strings.HasSuffix(lb.Ports[0], ":"+string(listen[1])) {
		t.Errorf("load balancer publishes %v but listens on %q", lb.Ports, listen)
	}
	for _, name := range replicas {
		if !strings.Contains(string(conf), "server "+name+":8080") {
			t.Errorf("load balancer configuration does not forward to %s:8080", name)
		}
		if _, ok := lb.DependsOn[name]; !ok {
			t.Errorf("load balancer does not depend on %s", name)
		}
	}
}

// mountedFile is the file of the repository that service s sees at path,
// through its bind mounts ("./src:dst[:ro]"); "" when none covers path.
func mountedFile(s composeService, path string) string {
	for _, v := range s.Volumes {
		src, rest, _ := strings.Cut(v, ":")
		dst, _, _ := strings.Cut(rest, ":")
		if !strings.HasPrefix(src, "./") {
			continue // a named volume
		}
		if path == dst {
			return filepath.Join("..", src)
		}
		if sub, ok := strings.CutPrefix(path, strings.TrimSuffix(dst, "/")+"/"); ok {
			return filepath.Join("..", src, sub)
		}
	}
	return ""
}

// TestComposeObservabilityProfile checks that the observability profile's
// Prometheus and Grafana see deploy/'s files where their configuration
// looks for them: the scrape configuration with its rules, pointing at the
// taskledger service, and Grafana's provisioning with the dashboard.
func TestComposeObservabilityProfile(t *testing.T) {
	t.Parallel()
	f := readCompose(t)
	service := func(name string) composeService {
		t.Helper()
		s, ok := f.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if !slices.Contains(s.Profiles, "observability") {
			t.Errorf("%s is not in the observability profile: %v", name, s.Profiles)
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("%s mounts %s, which does not exist: %v", name, src, err)
				}
			}
		}
		return s
	}
	mounts := func(s composeService, name, path, want string) {
		t.Helper()
		if got := mountedFile(s, path); filepath.Clean(got) != filepath.Clean(want) {
			t.Errorf("%s sees %q at %s, want %s", name, got, path, want)
		} else if _, err := os.Stat(got); err != nil {
			t.Errorf("%s sees nothing at %s: %v", name, path, err)
		}
	}

	prom := service("prometheus")
	var configPath string
	for _, a := range prom.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configPath = v
		}
	}
	mounts(prom, "prometheus", configPath, deployDir+"/prometheus/prometheus.yml")
	var scrape struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, deployDir+"/prometheus/prometheus.yml", &scrape)
	rules := map[string]bool{}
	for _, pattern := range scrape.RuleFiles {
		for _, v := range prom.Volumes {
			_, rest, _ := strings.Cut(v, ":")
			dst, _, _ := strings.Cut(rest, ":")
			if ok, _ := filepath.Match(pattern, dst); ok {
				rules[filepath.Clean(mountedFile(prom, dst))] = true
			}
		}
	}
	if want := filepath.Clean(deployDir + "/prometheus/taskledger.rules.yml"); !rules[want] {
		t.Errorf("prometheus loads the rules %v (rule_files %v), want %s", rules, scrape.RuleFiles, want)
	}
	var targets []string
	for _, c := range scrape.ScrapeConfigs {
		for _, sc := range c.StaticConfigs {
			for _, target := range sc.Targets {
				targets = append(targets, c.MetricsPath+" "+target)
			}
		}
	}
	if !slices.Contains(targets, "/metrics taskledger:8080") {
		t.Errorf("prometheus scrapes %v, want /metrics of taskledger:8080", targets)
	}

	grafana := service("grafana")
	mounts(grafana, "grafana", "/etc/grafana/provisioning/datasources/prometheus.yml",
		deployDir+"/grafana/provisioning/datasources/prometheus.yml")
	mounts(grafana, "grafana", "/etc/grafana/provisioning/dashboards/taskledger.yml",
		deployDir+"/grafana/provisioning/dashboards/taskledger.yml")
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, deployDir+"/grafana/provisioning/dashboards/taskledger.yml", &provider)
	if len(provider.Providers) != 1 {
		t.Fatalf("dashboard providers %+v, want one", provider.Providers)
	}
	mounts(grafana, "grafana", provider.Providers[0].Options.Path+"/taskledger.json", deployDir+"/grafana/dashboards/taskledger.json")
	mounts(grafana, "grafana", grafana.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"], deployDir+"/grafana/dashboards/taskledger.json")
	var sources struct {
		Datasources []struct {
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, deployDir+"/grafana/provisioning/datasources/prometheus.yml", &sources)
	if len(sources.Datasources) != 1 || sources.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana's data sources %+v, want the prometheus service", sources.Datasources)
	}
}

// readYAML parses the YAML file at path into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
