package integration_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskledger/taskledger/consumers"
	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// partitionsHeld counts, per service, the partitions whose consumer is
// active, by projection, failing t if two services work one partition.
func partitionsHeld(t *testing.T, svcs ...*service.Service) []map[string]int {
	t.Helper()
	held := make([]map[string]int, len(svcs))
	working := map[string]bool{}
	for i, s := range svcs {
		held[i] = map[string]int{}
		for _, c := range s.Consumers() {
			if !c.Active() {
				continue
			}
			for _, name := range c.Projections() {
				held[i][name]++
				worker := projections.Worker(name, c.Partition(), c.Partitions())
				if working[worker] {
					t.Fatalf("two replicas work %s at once", worker)
				}
				working[worker] = true
			}
		}
	}
	return held
}

// consumerLockClass is the advisory lock class of consumers, as the README
// tells operators to look for it in pg_locks.
const consumerLockClass = 7301

// consumerLocks lists the consumer locks pg_locks shows as granted, as
// "worker held by session", the session named by its application_name.
func (b *bundle) consumerLocks(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range testenv.Rows(t, b.svc.Pool(), `SELECT l.objid::bigint, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND a.datname = current_database()`,
		consumerLockClass) {
		out = append(out, fmt.Sprintf("%d held by %s", r[0], strings.TrimPrefix(r[1].(string), "taskledger-consumer-")))
	}
	slices.Sort(out)
	return out
}

// allWorkers lists, as consumerLocks does, the lock of every partition of
// every projection held by the session of its group's consumer.
func (b *bundle) allWorkers(t *testing.T, partitions int) []string {
	t.Helper()
	var out []string
	for _, g := range projections.Groups(partitions) {
		for part := range g.Partitions {
			for _, p := range g.Stages {
				objid := testenv.Rows(t, b.svc.Pool(), "SELECT hashtext($1)::oid::bigint", projections.Worker(p.Name, part, g.Partitions))[0][0]
				out = append(out, fmt.Sprintf("%d held by %s", objid, projections.Worker(g.Name, part, g.Partitions)))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestReplicasShareThePartitions runs two replicas with four partitions:
// each works two of every projection's four, pg_locks shows a lock per
// partition, and when one replica stops the other takes its partitions
// over while events keep being projected exactly once.
func TestReplicasShareThePartitions(t *testing.T) {
	t.Parallel()
	first := setup(t, func(c *config.Config) { c.Partitions = 4 })
	second := first.replica(t)
	bodies, want := shuffledCompletions("shared", 40, 3, 11)
	rounds := slices.Collect(slices.Chunk(bodies, 60))

	first.svc.Start()
	second.svc.Start()
	eventually(t, "the replicas to work two partitions of every projection each", func() bool {
		held := partitionsHeld(t, first.svc, second.svc)
		for _, p := range projections.Every {
			if p.Keys { // one partition, worked by either replica
				if held[0][p.Name]+held[1][p.Name] != 1 {
					return false
				}
				continue
			}
			if held[0][p.Name] != 2 || held[1][p.Name] != 2 {
				return false
			}
		}
		return true
	})
	if got, want := first.consumerLocks(t), first.allWorkers(t, 4); !slices.Equal(got, want) {
		t.Errorf("pg_locks shows consumer locks held by %v, want one per partition %v", got, want)
	}
	first.ingest(t, rounds[0][:30])
	second.ingest(t, rounds[0][30:])
	// The stream's last event is outside partition 0, so that a position
	// read from partition 0's events alone falls short of it.
	tail := "shared-tail"
	for i := 0; domain.Partition(tail, 4) == 0; i++ {
		tail = fmt.Sprintf("shared-tail-%d", i)
	}
	const tailAt = "2024-06-01T00:00:00Z"
	want[tail] = append(want[tail], tailAt)
	first.waitApplied(t, first.accept(t, completion(tail, tailAt)))

	var body struct {
		Projections []struct {
			Name       string `json:"name"`
			Checkpoint uint64 `json:"checkpoint"`
			Partitions []struct {
				Partition  int     `json:"partition"`
				Checkpoint uint64  `json:"checkpoint"`
				LastSeq    uint64  `json:"last_seq"`
				Lag        *uint64 `json:"lag"`
				Active     bool    `json:"active"`
			} `json:"partitions"`
		} `json:"projections"`
	}
	getJSON(t, second.url+"/v1/projections", &body)
	last := first.lastSeq(t)
	for _, p := range body.Projections {
		proj, _ := projections.ByName(p.Name)
		if n := proj.PartitionsOf(4); len(p.Partitions) != n || p.Checkpoint != last {
			t.Errorf("%s: checkpoint %d with partitions %+v, want %d caught up to %d", p.Name, p.Checkpoint, p.Partitions, n, last)
		}
		// The stream's last event is the last of one partition; a
		// projection of one partition (the key stage) reads every event.
		var lastOfAll uint64
		for i, part := range p.Partitions {
			if part.Partition != i || part.Lag == nil || *part.Lag != 0 || !part.Active || part.LastSeq == 0 || part.LastSeq > part.Checkpoint {
				t.Errorf("%s partition %+v: want an active, caught-up partition %d holding events", p.Name, part, i)
			}
			lastOfAll = max(lastOfAll, part.LastSeq)
		}
		if lastOfAll != last {
			t.Errorf("%s: its partitions' last events end at %d, want the stream's last sequence %d", p.Name, lastOfAll, last)
		}
	}

	first.svc.Close(context.Background())
	handedOver := time.Now()
	eventually(t, "the remaining replica to take every partition", func() bool {
		held := partitionsHeld(t, second.svc)
		for _, p := range projections.Every {
			if held[0][p.Name] != p.PartitionsOf(4) {
				return false
			}
		}
		return true
	})
	t.Logf("partitions taken over %v after the other replica stopped", time.Since(handedOver).Round(time.Millisecond))
	second.ingest(t, rounds[1])
	second.checkProjectedExactlyOnce(t, want)
}

// TestChangingPartitionsNeedsARebuild stores events with one partition,
// then asks for four: the service refuses, saying to rebuild; a rebuild of
// every projection repartitions the stream and gives the same tables as
// before; and events stored afterwards are projected exactly once.
func TestChangingPartitionsNeedsARebuild(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	bodies, want := shuffledCompletions("repart", 30, 4, 12)
	half := len(bodies) / 2
	b.ingest(t, bodies[:half])
	b.waitCaughtUp(t)
	before := b.tables(t)
	b.svc.Close(context.Background())

	cfg := b.cfg
	cfg.Partitions = 4
	_, err := service.Open(context.Background(), cfg, testLogger(t))
	// What to run about it is the CLI's hint (cmd/taskledger); the error
	// carries the counts.
	var changed *eventlog.PartitionsChangedError
	if !errors.Is(err, eventlog.ErrPartitionsChanged) || !errors.As(err, &changed) || changed.Stored != 1 || changed.Configured != 4 ||
		!strings.Contains(err.Error(), "needs a rebuild") {
		t.Fatalf("open with another partition count: %v, want ErrPartitionsChanged from 1 to 4 saying it needs a rebuild", err)
	}

	rebuilt, _ := openServiceWith(t, cfg, testLogger(t), service.Repartition())
	for _, p := range projections.Every {
		rb, err := rebuilt.Rebuilder().Start(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := rb.Run(context.Background(), func(consumers.Progress) {}); err != nil {
			t.Fatal(err)
		}
	}
	rebuilt.Close(context.Background())

	after := b.reopen(t, cfg)
	if got := after.tables(t); !slices.Equal(got, before) {
		t.Errorf("tables rebuilt with 4 partitions differ from those kept with 1:\n%v\nwant\n%v", got, before)
	}
	for _, p := range projections.Every {
		cps, err := projections.Partitions(context.Background(), after.svc.Pool(), p.Name)
		if n := p.PartitionsOf(4); err != nil || len(cps) != n {
			t.Errorf("%s after the rebuild: partitions %+v, %v; want %d", p.Name, cps, err, n)
		}
	}
	after.svc.Start()
	after.ingest(t, bodies[half:])
	after.checkProjectedExactlyOnce(t, want)
}

// tables dumps every projection's tables, sorted, to compare two
// databases or two moments.
func (b *bundle) tables(t *testing.T) []string {
	t.Helper()
	tables := []string{projections.Timeline.Name + ".events", projections.Timeline.Name + ".task_state"}
	for _, p := range projections.All {
		tables = append(tables, p.Name+".completions")
	}
	var out []string
	for _, table := range tables {
		for _, r := range testenv.Rows(t, b.svc.Pool(), "SELECT * FROM "+table) {
			out = append(out, fmt.Sprintf("%s %v", table, r))
		}
	}
	slices.Sort(out)
	return out
}
