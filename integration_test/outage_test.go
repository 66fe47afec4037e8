package integration_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) count(substrings ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, line := range strings.Split(s.buf.String(), "\n") {
		all := true
		for _, sub := range substrings {
			all = all && strings.Contains(line, sub)
		}
		if all && line != "" {
			n++
		}
	}
	return n
}

// TestPostgresOutageLosesNothing takes Postgres away while webhooks keep
// arriving: ingest keeps answering 202 (it needs only JetStream), each
// consumer logs the outage once, and when Postgres is back every event is
// projected exactly once without restarting anything.
func TestPostgresOutageLosesNothing(t *testing.T) {
	t.Parallel()
	forPartitions(t, testPostgresOutageLosesNothing)
}

func testPostgresOutageLosesNothing(t *testing.T, partitions int) {
	env := testenv.New(t)
	u, err := url.Parse(env.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	outage := testenv.NewOutage(t, u.Host)
	var logs syncBuffer
	cfg := env.Config()
	cfg.AdminToken = adminToken
	cfg.DatabaseURL = outage.ThroughProxy(env.DatabaseURL)
	cfg.Partitions = partitions
	_, js := testenv.ConnectURL(t, cfg.NATSURL)
	env.DeleteStreamOnCleanup(t, js)
	b := &bundle{env: env, cfg: cfg, js: js, stream: cfg.Stream}
	b.svc, b.url = openServiceWith(t, cfg, zerolog.New(&logs).Level(zerolog.InfoLevel))
	b.svc.Start()
	workers := len(b.consumerSessions())

	bodies, want := shuffledCompletions("outage", 10, 6, 3)
	b.ingest(t, bodies[:20])
	b.waitApplied(t, b.lastSeq(t))

	outage.Down()
	b.ingest(t, bodies[20:40])
	eventually(t, "every consumer to notice the outage", func() bool {
		return logs.count("projection paused") == workers
	})
	// Two more failed retries per consumer, which must not log again.
	noticed := b.scrape(t)
	eventually(t, "the consumers to retry and fail again", func() bool {
		now := b.scrape(t)
		for _, p := range projections.Every {
			if delta(t, noticed, now, "taskledger_consumer_restarts_total", "projection", p.Name) < float64(2*p.PartitionsOf(partitions)) {
				return false
			}
		}
		return true
	})
	if err := outage.Up(); err != nil {
		t.Fatal(err)
	}
	b.ingest(t, bodies[40:])

	b.checkProjectedExactlyOnce(t, want)
	for _, g := range projections.Groups(partitions) {
		name := fmt.Sprintf("%q:%q", "consumer", g.Name)
		if paused, recovered := logs.count(name, "projection paused"), logs.count(name, "projection recovered"); paused != g.Partitions || recovered != g.Partitions {
			t.Errorf("%s logged the outage %d times and its end %d times, want %d each (once per partition)", g.Name, paused, recovered, g.Partitions)
		}
	}
	if r := getStatus(t, b.url+"/readyz"); r != http.StatusOK {
		t.Errorf("readyz after the outage: %d", r)
	}
}
