package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

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
// Not every race meets it, so events keep coming until one has.
func TestConcurrentDuplicatesOnAReplicatedStream(t *testing.T) {
	t.Parallel()
	cluster := testenv.NewCluster(t, 3)
	first := setup(t, onCluster(cluster))
	second := first.replica(t)
	replicas := []*bundle{first, second}
	conflicts := countInProcessConflicts(t, cluster)

	const minEvents, maxEvents, copies = 5, 40, 40
	events := 0
	for ; events < minEvents || (events < maxEvents && conflicts() == 0); events++ {
		body := completion(fmt.Sprintf("t-dup-%d", events), "2024-01-15T10:30:00Z")
		start := make(chan struct{})
		answers := make(chan reply, copies)
		var wg sync.WaitGroup
		for c := range copies {
			wg.Go(func() {
				<-start
				r, err := replicas[c%2].tryPost(body)
				if err != nil {
					t.Error(err)
					return
				}
				answers <- r
			})
		}
		close(start)
		wg.Wait()
		close(answers)
		checkOneStored(t, answers, copies, fmt.Sprintf("event %d", events))
	}
	if n := first.messages(t); n != uint64(events) {
		t.Errorf("stream holds %d events, want %d", n, events)
	}
	n := conflicts()
	t.Logf(`%d publishes of %d events met "duplicate message id is in process"`, n, events)
	if n == 0 {
		t.Error("no publish met it: the copies did not race")
	}
}

// countInProcessConflicts listens to every publish acknowledgement on the
// cluster and returns a function counting, after a flush, those that were
// JetStream's "duplicate message id is in process" (409, error code 10158).
func countInProcessConflicts(t *testing.T, cluster *testenv.Cluster) func() int64 {
	t.Helper()
	nc, _ := testenv.ConnectURL(t, cluster.URLs())
	var n atomic.Int64
	if _, err := nc.Subscribe(nats.InboxPrefix+">", func(m *nats.Msg) {
		if bytes.Contains(m.Data, []byte(`"err_code":10158`)) {
			n.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int64 {
		if err := nc.Flush(); err != nil {
			t.Error(err)
		}
		return n.Load()
	}
}

// tryPost delivers body as a tallyfy webhook; unlike post it returns its
// failures, for goroutines other than the test's.
func (b *bundle) tryPost(body string) (reply, error) {
	resp, err := http.Post(b.url+"/v1/webhooks/tallyfy", "application/json", strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	r := reply{Status: resp.StatusCode, Header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return reply{}, fmt.Errorf("webhook answered %d with a body that is not JSON: %w", resp.StatusCode, err)
	}
	return r, nil
}
