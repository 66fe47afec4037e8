package eventlog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/domain"
)

// StreamConfig names the event stream and its retention.
type StreamConfig struct {
	Name            string        // stream name, e.g. TASK_EVENTS
	SubjectPrefix   string        // events go to <prefix>.<source>, or <prefix>.<partition>.<source>
	DuplicateWindow time.Duration // Nats-Msg-Id window
	MaxAge          time.Duration // 0 keeps every event
	Replicas        int           // copies on a cluster; 0 means 1
	// Partitions splits the events by task id into this many partitions,
	// each on subjects of its own; 0 or 1 means one partition, on the
	// unpartitioned subjects.
	Partitions int
}

// Subject is the subject of an event of taskID from source: with one
// partition <prefix>.<source>, else <prefix>.<partition>.<source>.
//
// The partition is computed here, at ingest, rather than by a stream
// subject transform (partition(n, …)): that would need the task id as a
// subject token (escaped, and visible to everything that lists subjects)
// and nats-server 2.10, and this way the function is ours, tested, and the
// same on every server.
func (c StreamConfig) Subject(source, taskID string) string {
	if c.Partitions <= 1 {
		return c.SubjectPrefix + "." + source
	}
	return c.SubjectPrefix + "." + strconv.Itoa(domain.Partition(taskID, c.Partitions)) + "." + source
}

// AllSubjects matches the events of every source and partition: the
// stream's subjects, and the filter of a reader of them all.
func (c StreamConfig) AllSubjects() string { return c.SubjectPrefix + ".>" }

// PartitionSubjects are the filters of partition p's events. With one
// partition that is every event. Partition 0 also takes events stored
// without a partition token (<prefix>.<source>, by other tools), so that
// every event belongs to exactly one partition.
func (c StreamConfig) PartitionSubjects(p int) []string {
	if c.Partitions <= 1 {
		return []string{c.AllSubjects()}
	}
	own := c.SubjectPrefix + "." + strconv.Itoa(p) + ".*"
	if p == 0 {
		return []string{own, c.SubjectPrefix + ".*"}
	}
	return []string{own}
}

// metadataPartitions is the stream metadata key recording the partition
// count the events were stored with.
const metadataPartitions = "taskledger_partitions"

// ErrPartitionsChanged is returned by EnsureStream when the stream was
// created with another partition count.
var ErrPartitionsChanged = errors.New("the partition count differs from the stream's")

// PartitionsChangedError says the stream holds events stored with another
// partition count than the one configured: changing it needs a rebuild of
// every projection (see Repartition). It is ErrPartitionsChanged.
type PartitionsChangedError struct {
	Stream             string
	Stored, Configured int
}

func (e *PartitionsChangedError) Error() string {
	return fmt.Sprintf("%s: stream %s holds events in %d partition(s), and %d are configured: "+
		"changing the count needs a rebuild of every projection", ErrPartitionsChanged, e.Stream, e.Stored, e.Configured)
}

// Is makes a *PartitionsChangedError match ErrPartitionsChanged.
func (e *PartitionsChangedError) Is(target error) bool { return target == ErrPartitionsChanged }

// EnsureStream creates the stream or updates it to match c. It is file
// backed and keeps every event (unless MaxAge is set) so that projections
// can be rebuilt from sequence 1. It refuses, with a
// *PartitionsChangedError, a stream that records another partition count:
// see Repartition.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Stream, error) {
	return ensureStream(ctx, js, c, false)
}

// Repartition is EnsureStream that also changes the stream's recorded
// partition count to c's. Events stored before stay on their subjects;
// every projection must then be rebuilt, and every replica use the new
// count.
func Repartition(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Stream, error) {
	return ensureStream(ctx, js, c, true)
}

// settlePatience bounds how long EnsureStream retries while JetStream
// cannot answer yet: a cluster electing its meta leader after losing a
// server answers "temporarily unavailable", or not at all, for seconds.
// Each try gets settleTry.
const (
	settlePatience = 30 * time.Second
	settleTry      = 5 * time.Second
)

func ensureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig, repartition bool) (jetstream.Stream, error) {
	deadline := time.Now().Add(settlePatience)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		try, cancel := context.WithTimeout(ctx, settleTry)
		s, err := ensureStreamOnce(try, js, c, repartition)
		cancel()
		if err == nil || !unsettled(err) || time.Now().Add(wait).After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// ErrNoJetStream is returned by EnsureStream when the server runs no
// JetStream (or not for this account).
var ErrNoJetStream = errors.New("the NATS server does not run JetStream for this account")

// withoutJetStream marks err with ErrNoJetStream when it says so: nobody
// answers JetStream's API, or the server says JetStream is off.
func withoutJetStream(err error) error {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w: %w", ErrNoJetStream, err)
	}
	return err
}

// unsettled reports whether err is JetStream not answering yet, rather
// than an answer that retrying cannot change.
func unsettled(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == http.StatusServiceUnavailable &&
			apiErr.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled &&
			apiErr.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabledForAccount
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}

func ensureStreamOnce(ctx context.Context, js jetstream.JetStream, c StreamConfig, repartition bool) (jetstream.Stream, error) {
	want := max(c.Partitions, 1)
	if !repartition {
		s, err := js.Stream(ctx, c.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil: // unknown, so the partition count cannot be checked
			return nil, fmt.Errorf("read stream %s: %w", c.Name, withoutJetStream(err))
		default:
			if had := StoredPartitions(s.CachedInfo().Config); had != want {
				return nil, &PartitionsChangedError{Stream: c.Name, Stored: had, Configured: want}
			}
		}
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Name,
		Description: "taskledger webhook events",
		Subjects:    []string{c.AllSubjects()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		AllowDirect: true,
		Metadata:    map[string]string{metadataPartitions: strconv.Itoa(want)},
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", c.Name, withoutJetStream(err))
	}
	if got := StoredPartitions(s.CachedInfo().Config); got != want {
		return nil, fmt.Errorf("stream %s did not record its %d partitions: partitions need nats-server 2.10 or later", c.Name, want)
	}
	return s, nil
}

// StoredPartitions is the partition count a stream records; 1 when it
// records none (streams from before partitions).
func StoredPartitions(cfg jetstream.StreamConfig) int {
	n, err := strconv.Atoi(cfg.Metadata[metadataPartitions])
	if err != nil || n < 1 {
		return 1
	}
	return n
}
