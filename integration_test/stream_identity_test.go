package integration_test

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// embeddedConfig is a configuration running its own embedded NATS server
// storing under dataDir, on database databaseURL.
func embeddedConfig(t *testing.T, databaseURL, dataDir string) config.Config {
	cfg := config.Default()
	cfg.DatabaseURL, cfg.DataDir, cfg.EmbeddedNATSAddr = databaseURL, dataDir, netip.AddrPort{}
	cfg.NATSSync, cfg.HTTPAddr = config.SyncPolicy{Interval: time.Minute}, "127.0.0.1:0"
	return cfg
}

// openMismatched opens a service with cfg, which must be refused because the
// database follows another stream; it returns the refusal.
func openMismatched(t *testing.T, cfg config.Config) *projections.StreamMismatchError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := service.Open(ctx, cfg, testLogger(t))
	if err == nil {
		svc.Close(context.Background())
		t.Fatal("the service started on a database that follows another stream")
	}
	var mismatch *projections.StreamMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("refused with %v, want a stream mismatch", err)
	}
	// The settings and the command of each way out are the CLI's to add
	// (cmd/taskledger's hints); the refusal names both streams and both ways.
	for _, want := range []string{mismatch.Recorded.String(), mismatch.Current.String(),
		"point taskledger at the stream the database follows", "rebuild every projection from this stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	return mismatch
}

// runEmbedded opens a service with cfg, ingests completions of task and
// waits until they are projected; it returns the closed service's last seq.
func runEmbedded(t *testing.T, cfg config.Config, task string, times ...string) {
	t.Helper()
	svc, url := openService(t, cfg)
	svc.Start()
	b := &bundle{cfg: cfg, svc: svc, url: url}
	var last uint64
	for _, at := range times {
		last = b.accept(t, completion(task, at))
	}
	b.waitApplied(t, last)
	svc.Close(context.Background())
}

func TestWipedDataDirIsRefusedUntilAdopted(t *testing.T) {
	t.Parallel()
	db, dir := testenv.NewDatabase(t), t.TempDir()
	cfg := embeddedConfig(t, db, dir)
	runEmbedded(t, cfg, "wiped", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")

	if err := os.RemoveAll(dir); err != nil { // what `make clean` does
		t.Fatal(err)
	}
	mismatch := openMismatched(t, cfg)
	if mismatch.Checkpoint != 3 || mismatch.LastSeq != 0 || mismatch.Recorded.Name != cfg.Stream ||
		mismatch.Recorded.Created.Equal(mismatch.Current.Created) {
		t.Errorf("mismatch %+v", mismatch)
	}
	// The documented remedy: rebuild every projection from this stream.
	ctx := context.Background()
	adopter, err := service.OpenToAdopt(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := adopter.AdoptStream(ctx, service.ProgressLogger(testLogger(t), time.Second)); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	adopter.Close(context.Background())

	svc, url := openService(t, cfg)
	svc.Start()
	b := &bundle{cfg: cfg, svc: svc, url: url}
	if r := b.post(t, "s", completion("fresh", "2025-01-01T00:00:00Z")); r.StreamSeq != 1 {
		t.Fatalf("first event in the new stream: %+v", r)
	}
	b.waitApplied(t, 1)
	if got := completionTimes(b.history(t, "fresh", "all")); len(got) != 1 {
		t.Errorf("new stream's event: %v", got)
	}
	if r := b.get(t, "/v1/tasks/wiped/completions"); r.Status != http.StatusNotFound {
		t.Errorf("the old stream's task after adoption: %d, want 404", r.Status)
	}
}

func TestAnotherStreamNameIsRefused(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	b.waitApplied(t, b.accept(t, completion("named", "2024-01-01T00:00:00Z")))

	other := b.cfg
	other.Stream = b.cfg.Stream + "_OTHER"
	other.SubjectPrefix = b.cfg.SubjectPrefix + "x"
	_, js := testenv.ConnectURL(t, other.NATSURL)
	(&testenv.Env{Stream: other.Stream}).DeleteStreamOnCleanup(t, js)
	mismatch := openMismatched(t, other)
	if mismatch.Recorded.Name != b.cfg.Stream || mismatch.Current.Name != other.Stream {
		t.Errorf("mismatch names %q and %q", mismatch.Recorded.Name, mismatch.Current.Name)
	}
	// The service on the right stream is unaffected.
	b.waitApplied(t, b.accept(t, completion("named", "2024-01-02T00:00:00Z")))
}

func TestSecondInstanceWithItsOwnEmbeddedServerIsRefused(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t)
	first := embeddedConfig(t, db, t.TempDir())
	svc, url := openService(t, first)
	svc.Start()
	b := &bundle{cfg: first, svc: svc, url: url}
	b.waitApplied(t, b.accept(t, completion("twin", "2024-01-01T00:00:00Z")))

	second := embeddedConfig(t, db, t.TempDir())
	second.Stream = first.Stream
	mismatch := openMismatched(t, second)
	if mismatch.Recorded.Name != mismatch.Current.Name || mismatch.Current.Created.Equal(mismatch.Recorded.Created) {
		t.Errorf("mismatch %+v", mismatch)
	}
	b.waitApplied(t, b.accept(t, completion("twin", "2024-01-02T00:00:00Z")))
}

func TestStreamResetUnderARunningServiceStallsAndIsNotReady(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, func(c *config.Config) { c.AdminToken = adminToken })
	for _, at := range []string{"2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"} {
		b.accept(t, completion("reset", at))
	}
	b.waitApplied(t, 2)
	if status := getStatus(t, b.url+"/readyz"); status != http.StatusOK {
		t.Fatalf("readyz before the reset: %d", status)
	}

	// A checkpoint ahead of the stream is never lag 0: not in the
	// projection's lag, its partition's, the lag metric or Service.Lag.
	if _, err := b.svc.Pool().Exec(context.Background(), "UPDATE completions_first.checkpoint SET last_seq = 10"); err != nil {
		t.Fatal(err)
	}
	first := b.projectionView(t, "completions_first")
	if first.State != "stalled" || first.Lag != nil || !strings.Contains(first.Reason, "reach sequence 10") ||
		len(first.Partitions) != 1 || first.Partitions[0].Lag != nil {
		t.Errorf("checkpoint ahead of the stream: %+v", first)
	}
	if lag := b.scrape(t).value(t, "taskledger_projection_lag_events", "projection", "completions_first"); lag != 10 {
		t.Errorf("lag metric with the checkpoint at 10 and the stream at 2: %v, want 10 (the checkpoint)", lag)
	}
	if lag, err := b.svc.Lag(context.Background()); err != nil || lag != 10 {
		t.Errorf("Service.Lag with a checkpoint ahead of the stream: %d, %v; want 10", lag, err)
	}
	if status := getStatus(t, b.url+"/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("readyz with a checkpoint ahead of the stream: %d, want 503", status)
	}
	if _, err := b.svc.Pool().Exec(context.Background(), "UPDATE completions_first.checkpoint SET last_seq = 2"); err != nil {
		t.Fatal(err)
	}

	// The stream is deleted and created again under the running service.
	ctx := context.Background()
	if err := b.js.DeleteStream(ctx, b.stream); err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.EnsureStream(ctx, b.js, eventlog.StreamConfig{Name: b.stream, SubjectPrefix: b.cfg.SubjectPrefix,
		DuplicateWindow: b.cfg.DuplicateWindow}); err != nil {
		t.Fatal(err)
	}
	// The new stream is empty: a stalled projection's lag metric is still
	// not 0, but the larger of its checkpoint and the stream's end.
	checkOffStream := func(when string, lag float64) {
		t.Helper()
		s := b.scrape(t)
		for _, p := range projections.Every {
			v := b.projectionView(t, p.Name)
			if v.State != "stalled" || v.Lag != nil || !strings.Contains(v.Reason, "the database follows stream") {
				t.Errorf("%s %s: %+v", p.Name, when, v)
			}
			for _, part := range v.Partitions {
				if part.Lag != nil {
					t.Errorf("%s %s: partition %+v has a lag", p.Name, when, part)
				}
			}
			if got := s.value(t, "taskledger_projection_lag_events", "projection", p.Name); got != lag {
				t.Errorf("%s %s: lag metric %v, want %v", p.Name, when, got, lag)
			}
		}
	}
	checkOffStream("on the empty new stream", 2)
	// Enough events that the new stream reaches past the old checkpoint.
	for i, at := range []string{"2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z", "2024-01-05T00:00:00Z"} {
		if ack, err := b.js.Publish(ctx, b.cfg.SubjectPrefix+".s", []byte(completion("reset", at))); err != nil || ack.Sequence != uint64(i+1) {
			t.Fatalf("publish into the new stream: %v, %v", ack, err)
		}
	}
	checkOffStream("after the reset", 3)
	if status := getStatus(t, b.url+"/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("readyz after the reset: %d, want 503", status)
	}
	if r := b.adminPost(t, "/v1/projections/completions_all/rebuild", adminToken); r.Status != http.StatusConflict || r.Error.Code != "stream_mismatch" {
		t.Errorf("rebuild against the reset stream: %+v, want 409 stream_mismatch", r)
	}
	// The consumers stop, and apply nothing from the new stream.
	eventually(t, "the consumers to stop", func() bool {
		return slices.Max(activeReplicas(t, b.svc)) == 0
	})
	if got := completionTimes(b.history(t, "reset", "all")); len(got) != 2 {
		t.Errorf("after the reset the projection holds %v, want the two old completions only", got)
	}
}

// projectionView reads one projection from GET /v1/projections.
func (b *bundle) projectionView(t *testing.T, name string) projectionDetail {
	t.Helper()
	var body struct {
		Projections []projectionDetail `json:"projections"`
	}
	getJSON(t, b.url+"/v1/projections", &body)
	for _, p := range body.Projections {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("projection %s not listed", name)
	return projectionDetail{}
}

// projectionDetail is a projection's status with its reason and latest
// rebuild.
type projectionDetail struct {
	Name       string  `json:"name"`
	Lag        *uint64 `json:"lag"`
	State      string  `json:"state"`
	Reason     string  `json:"reason"`
	Partitions []struct {
		Partition int     `json:"partition"`
		LastSeq   uint64  `json:"last_seq"`
		Lag       *uint64 `json:"lag"`
	} `json:"partitions"`
	Rebuild *struct {
		Outcome    string     `json:"outcome"`
		Error      string     `json:"error"`
		AppliedSeq uint64     `json:"applied_seq"`
		TargetSeq  uint64     `json:"target_seq"`
		FinishedAt *time.Time `json:"finished_at"`
		FailedAt   *time.Time `json:"failed_at"`
	} `json:"rebuild"`
}
