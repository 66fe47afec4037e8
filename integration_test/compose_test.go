package integration_test

import (
	"os"
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
	Image       string            `yaml:"image"`
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
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
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
			if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(tag) && !regexp.MustCompile(`^\d+\.\d+(-|$)`).MatchString(tag) {
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
