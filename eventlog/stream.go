package eventlog

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig names the event stream and its retention.
type StreamConfig struct {
	Name            string        // stream name, e.g. TASK_EVENTS
	SubjectPrefix   string        // events go to <prefix>.<source>
	DuplicateWindow time.Duration // Nats-Msg-Id window
	MaxAge          time.Duration // 0 keeps every event
	Replicas        int           // copies on a cluster; 0 means 1
}

// Subject is the subject of events from source.
func (c StreamConfig) Subject(source string) string { return c.SubjectPrefix + "." + source }

// AllSubjects matches the events of every source: the stream's subjects,
// and the filter of the consumers that read them all.
func (c StreamConfig) AllSubjects() string { return c.SubjectPrefix + ".>" }

// EnsureStream creates the stream or updates it to match c. It is file
// backed and keeps every event (unless MaxAge is set) so that projections
// can be rebuilt from sequence 1.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Stream, error) {
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
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w (is JetStream enabled on the server?)", c.Name, err)
	}
	return s, nil
}
