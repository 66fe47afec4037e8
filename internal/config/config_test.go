package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesEachBadSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		adjust func(*Config)
		want   string
	}{
		{"role", func(c *Config) { c.Role = "worker" }, "role"},
		{"listen address", func(c *Config) { c.HTTPAddr = "8080" }, "http-addr"},
		{"database scheme", func(c *Config) { c.DatabaseURL = "mysql://x" }, "database-url"},
		{"embedded without dir", func(c *Config) { c.DataDir = "" }, "data-dir"},
		{"embedded addr not loopback", func(c *Config) { c.EmbeddedNATSAddr = "0.0.0.0:4223" }, "embedded-nats-addr"},
		{"embedded addr no port", func(c *Config) { c.EmbeddedNATSAddr = "127.0.0.1" }, "embedded-nats-addr"},
		{"sync policy", func(c *Config) { c.NATSSync = "sometimes" }, "nats-sync"},
		{"negative sync", func(c *Config) { c.NATSSync = "-1s" }, "nats-sync"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "log-level"},
		{"stream name", func(c *Config) { c.Stream = "a.b" }, "stream"},
		{"subject wildcard", func(c *Config) { c.SubjectPrefix = "a.*" }, "subject-prefix"},
		{"subject trailing dot", func(c *Config) { c.SubjectPrefix = "a." }, "subject-prefix"},
		{"window", func(c *Config) { c.DuplicateWindow = 0 }, "duplicate-window"},
		{"max age under window", func(c *Config) { c.StreamMaxAge = time.Second }, "stream-max-age"},
		{"replicas", func(c *Config) { c.StreamReplicas = 7 }, "stream-replicas"},
		{"source", func(c *Config) { c.Sources = []string{"Bad.Source"} }, "sources"},
		{"sources twice", func(c *Config) { c.Sources, c.SourcesFile = []string{"a"}, "sources.yaml" }, "sources-file"},
		{"body limit", func(c *Config) { c.MaxBodyBytes = 0 }, "max-body-bytes"},
		{"publish timeout", func(c *Config) { c.PublishTimeout = 0 }, "publish-timeout"},
		{"batch size", func(c *Config) { c.BatchSize = 0 }, "batch-size"},
		{"dedup retention", func(c *Config) { c.DedupRetention = time.Second }, "dedup-retention"},
		{"shutdown timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, "shutdown-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tt.adjust(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestBindReadsEnvironmentThenFlags(t *testing.T) {
	t.Setenv("TASKLEDGER_HTTP_ADDR", ":9090")
	t.Setenv("TASKLEDGER_DUPLICATE_WINDOW", "10m")
	t.Setenv("TASKLEDGER_SOURCES", "tallyfy, zapier")
	t.Setenv("TASKLEDGER_LOG_LEVEL", "debug")
	c := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	envErrors := c.Bind(fs)
	if err := fs.Parse([]string{"-log-level", "warn", "-max-body-bytes", "2048"}); err != nil {
		t.Fatal(err)
	}
	if err := envErrors(); err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":9090" || c.DuplicateWindow != 10*time.Minute || c.LogLevel != "warn" ||
		c.MaxBodyBytes != 2048 || strings.Join(c.Sources, "|") != "tallyfy|zapier" {
		t.Errorf("unexpected config %+v", c)
	}
}

func TestBindReportsUnparsableEnvironment(t *testing.T) {
	t.Setenv("TASKLEDGER_PUBLISH_TIMEOUT", "soon")
	t.Setenv("TASKLEDGER_MAX_BODY_BYTES", "1MB")
	t.Setenv("TASKLEDGER_STREAM_REPLICAS", "three")
	c := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	envErrors := c.Bind(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := envErrors()
	for _, want := range []string{"TASKLEDGER_PUBLISH_TIMEOUT", "max-body-bytes", "stream-replicas"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
