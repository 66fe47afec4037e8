package config

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
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
		{"embedded addr not loopback", func(c *Config) { c.EmbeddedNATSAddr = netip.MustParseAddrPort("0.0.0.0:4223") }, "embedded-nats-addr"},
		{"sync policy", func(c *Config) { c.NATSSync = SyncPolicy{} }, "nats-sync"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "log-level"},
		{"stream name", func(c *Config) { c.Stream = "a.b" }, "stream"},
		{"subject wildcard", func(c *Config) { c.SubjectPrefix = "a.*" }, "subject-prefix"},
		{"subject trailing dot", func(c *Config) { c.SubjectPrefix = "a." }, "subject-prefix"},
		{"window", func(c *Config) { c.DuplicateWindow = 0 }, "duplicate-window"},
		{"max age under window", func(c *Config) { c.StreamMaxAge = time.Second }, "stream-max-age"},
		{"replicas", func(c *Config) { c.StreamReplicas = 7 }, "stream-replicas"},
		{"even replicas", func(c *Config) { c.StreamReplicas = 2 }, "stream-replicas"},
		{"no partitions", func(c *Config) { c.Partitions = 0 }, "partitions"},
		{"too many partitions", func(c *Config) { c.Partitions = MaxPartitions + 1 }, "partitions"},
		{"source", func(c *Config) { c.Sources = []string{"Bad.Source"} }, "sources"},
		{"sources twice", func(c *Config) { c.Sources, c.SourcesFile = []string{"a"}, "sources.yaml" }, "sources-file"},
		{"body limit", func(c *Config) { c.MaxBodyBytes = 0 }, "max-body-bytes"},
		{"inflight under body", func(c *Config) { c.MaxInflightBytes = c.MaxBodyBytes - 1 }, "max-inflight-bytes"},
		{"publish timeout", func(c *Config) { c.PublishTimeout = 0 }, "publish-timeout"},
		{"batch size", func(c *Config) { c.BatchSize = 0 }, "batch-size"},
		{"dedup retention", func(c *Config) { c.DedupRetention = time.Second }, "dedup-retention"},
		{"dedup lookup timeout", func(c *Config) { c.DedupLookupTimeout = 0 }, "dedup-lookup-timeout"},
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

func TestLoadReadsEnvironmentThenFlags(t *testing.T) {
	t.Setenv("TASKLEDGER_HTTP_ADDR", ":9090")
	t.Setenv("TASKLEDGER_DUPLICATE_WINDOW", "10m")
	t.Setenv("TASKLEDGER_SOURCES", "tallyfy, zapier")
	t.Setenv("TASKLEDGER_LOG_LEVEL", "debug")
	t.Setenv("TASKLEDGER_NATS_SYNC", "2m")
	t.Setenv("TASKLEDGER_EMBEDDED_NATS_ADDR", "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	own := fs.Bool("own", false, "a command's own flag")
	c, positional, err := Load(fs, []string{"first", "-log-level", "warn", "-max-body-bytes", "2048", "second", "-own"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":9090" || c.DuplicateWindow != 10*time.Minute || c.LogLevel != "warn" ||
		c.MaxBodyBytes != 2048 || strings.Join(c.Sources, "|") != "tallyfy|zapier" ||
		c.NATSSync != (SyncPolicy{Interval: 2 * time.Minute}) || c.EmbeddedNATSAddr.IsValid() {
		t.Errorf("unexpected config %+v", c)
	}
	if !*own || strings.Join(positional, " ") != "first second" {
		t.Errorf("own flag %v, positional %v", *own, positional)
	}
}

// TestLoadReportsEachProblemOnce: a value that does not parse is one line
// naming its flag and variable, and not a second line from Validate.
func TestLoadReportsEachProblemOnce(t *testing.T) {
	t.Setenv("TASKLEDGER_PUBLISH_TIMEOUT", "soon")
	t.Setenv("TASKLEDGER_MAX_BODY_BYTES", "1MB")
	t.Setenv("TASKLEDGER_STREAM_REPLICAS", "three")
	t.Setenv("TASKLEDGER_NATS_SYNC", "sometimes")
	t.Setenv("TASKLEDGER_EMBEDDED_NATS_ADDR", "localhost")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, _, err := Load(fs, []string{"-batch-size", "abc", "-batch-size", "0", "-http-addr", "nonsense"})
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`--embedded-nats-addr (TASKLEDGER_EMBEDDED_NATS_ADDR): "localhost": want an IP address and port`,
		`--nats-sync (TASKLEDGER_NATS_SYNC): "sometimes": want "always" or a positive interval`,
		`--stream-replicas (TASKLEDGER_STREAM_REPLICAS): "three" is not a whole number`,
		`--max-body-bytes (TASKLEDGER_MAX_BODY_BYTES): "1MB" is not a whole number`,
		`--publish-timeout (TASKLEDGER_PUBLISH_TIMEOUT): "soon" is not a duration`,
		`--batch-size (TASKLEDGER_BATCH_SIZE): "abc" is not a whole number`,
		`--http-addr (TASKLEDGER_HTTP_ADDR): "nonsense": want host:port or :port`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start %q", i, lines[i], w)
		}
	}
}

func TestLoadValidates(t *testing.T) {
	t.Setenv("TASKLEDGER_STREAM_REPLICAS", "2")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	_, _, err := Load(fs, []string{"-batch-size", "0"})
	if err == nil || err.Error() != "--stream-replicas (TASKLEDGER_STREAM_REPLICAS): 2: want 1, 3 or 5 (an even count adds no fault tolerance)\n"+
		"--batch-size (TASKLEDGER_BATCH_SIZE): 0: want 1 to 10000" {
		t.Errorf("err = %v", err)
	}
}

// TestLoadRefusesABodyLimitOverTheInflightBudget: raising only the body
// limit past the default in-flight budget, under which the largest body
// could never be taken, is one line naming the budget's flag and variable.
func TestLoadRefusesABodyLimitOverTheInflightBudget(t *testing.T) {
	t.Setenv("TASKLEDGER_MAX_BODY_BYTES", strconv.FormatInt(Default().MaxInflightBytes+1, 10))
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	_, _, err := Load(fs, nil)
	want := fmt.Sprintf("--max-inflight-bytes (TASKLEDGER_MAX_INFLIGHT_BYTES): %d: want at least --max-body-bytes (%d), "+
		"or the largest body could never be taken", Default().MaxInflightBytes, Default().MaxInflightBytes+1)
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestSettingsDescribeEveryFlag(t *testing.T) {
	t.Parallel()
	for _, s := range Settings() {
		if s.Usage == "" || s.Type == "" {
			t.Errorf("setting %+v lacks a usage or type", s)
		}
	}
	if d := Settings()[0]; d.Name != "role" || d.Default != "all" {
		t.Errorf("first setting %+v", d)
	}
}
