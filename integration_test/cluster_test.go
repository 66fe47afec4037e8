package integration_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/testenv"
)

// onCluster points a configuration at a 3-node cluster with a stream
// replicated on every node.
func onCluster(c *testenv.Cluster) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.NATSURL = c.URLs()
		cfg.StreamReplicas = 3
	}
}

// TestConcurrentDuplicatesOnAReplicatedStream delivers each event many
// times at once through two replicas. On an R3 stream the copies racing
// the first one meet "duplicate message id is in process"; every one of
// them must still be answered 200 with the sequence of the one stored.
func TestConcurrentDuplicatesOnAReplicatedStream(t *testing.T) {
	t.Parallel()
	cluster := testenv.NewCluster(t, 3)
	first := setup(t, onCluster(cluster))
	second := first.replica(t)
	replicas := []*bundle{first, second}

	const events, copies = 5, 40
	for i := range events {
		body := completion(fmt.Sprintf("t-dup-%d", i), "2024-01-15T10:30:00Z")
		start := make(chan struct{})
		answers := make(chan reply, copies)
		var wg sync.WaitGroup
		for c := range copies {
			wg.Go(func() {
				<-start
				answers <- replicas[c%2].post(t, "tallyfy", body)
			})
		}
		close(start)
		wg.Wait()
		close(answers)
		checkOneStored(t, answers, copies, fmt.Sprintf("event %d", i))
	}
	if n := first.messages(t); n != events {
		t.Errorf("stream holds %d events, want %d", n, events)
	}
}
