package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
	"github.com/taskledger/taskledger/projections"
)

// replicaProcess is a taskledger serve process a test can SIGKILL and
// restart, configured like cfg but listening on its own loopback port.
type replicaProcess struct {
	*testenv.Process
	url string
}

func startReplicaProcess(t *testing.T, name string, cfg config.Config) *replicaProcess {
	t.Helper()
	bin := testenv.Binary(t, "github.com/taskledger/taskledger/cmd/taskledger")
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePorts(t, 1)[0])
	env := []string{
		"TASKLEDGER_HTTP_ADDR=" + addr,
		"TASKLEDGER_DATABASE_URL=" + cfg.DatabaseURL,
		"TASKLEDGER_NATS_URL=" + cfg.NATSURL,
		"TASKLEDGER_STREAM=" + cfg.Stream,
		"TASKLEDGER_SUBJECT_PREFIX=" + cfg.SubjectPrefix,
		"TASKLEDGER_STREAM_REPLICAS=" + strconv.Itoa(cfg.StreamReplicas),
		"TASKLEDGER_PUBLISH_TIMEOUT=" + cfg.PublishTimeout.String(),
		"TASKLEDGER_BATCH_SIZE=" + strconv.Itoa(cfg.BatchSize),
		"TASKLEDGER_PARTITIONS=" + strconv.Itoa(cfg.Partitions),
		"TASKLEDGER_ADMIN_TOKEN=" + cfg.AdminToken,
		"TASKLEDGER_LOG_LEVEL=info",
	}
	r := &replicaProcess{Process: testenv.NewProcess(t, name, bin, []string{"serve"}, env), url: "http://" + addr}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t)
	return r
}

// waitReady waits until the replica answers /readyz with 200.
func (r *replicaProcess) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, r.Name+" to be ready", func() bool {
		if !r.Running() {
			t.Fatalf("%s exited before it was ready", r.Name)
		}
		resp, err := http.Get(r.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// answer is one HTTP answer to a delivery.
type answer struct {
	at         time.Time
	status     int // 0: no answer (connection refused or cut)
	retryAfter string
	key        string
	seq        uint64
}

// steadyLoad sends distinct completions from several senders, each
// retrying an event until it gets a 2xx, switching replica on a refused
// connection or a 503 as a load balancer would. It records every answer.
type steadyLoad struct {
	mu      sync.Mutex
	answers []answer
	acked   int
	stop    chan struct{}
	done    sync.WaitGroup
}

// maxLoadEvents bounds the events a steadyLoad sends in all.
const maxLoadEvents = 20_000

func startSteadyLoad(replicas []*replicaProcess, senders int) *steadyLoad {
	l := &steadyLoad{stop: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	for s := range senders {
		l.done.Go(func() {
			target := s % len(replicas)
			for i := range maxLoadEvents / senders {
				body := completionOf(fmt.Sprintf("fo-%d-%d", s, i), "failover", "2024-01-15T10:30:00Z", "u@example.com")
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					a := deliver(client, replicas[target].url, body)
					l.record(a)
					if a.status == http.StatusAccepted || a.status == http.StatusOK {
						break
					}
					target = (target + 1) % len(replicas)
					time.Sleep(50 * time.Millisecond) // faster than Retry-After, to time the outage finely
				}
			}
		})
	}
	return l
}

func deliver(client *http.Client, url, body string) answer {
	resp, err := client.Post(url+"/v1/webhooks/tallyfy", "application/json", bytes.NewBufferString(body))
	if err != nil {
		return answer{at: time.Now()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{at: time.Now(), status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	var r reply
	if json.Unmarshal(raw, &r) == nil {
		a.key, a.seq = r.DedupKey, r.StreamSeq
	}
	return a
}

func (l *steadyLoad) record(a answer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers = append(l.answers, a)
	if a.status == http.StatusAccepted || a.status == http.StatusOK {
		l.acked++
	}
}

func (l *steadyLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// waitMoreAcked waits until n more events than now have been acknowledged.
func (l *steadyLoad) waitMoreAcked(t *testing.T, n int, what string) {
	t.Helper()
	want := l.ackedCount() + n
	eventually(t, fmt.Sprintf("%d more acknowledged events %s", n, what), func() bool { return l.ackedCount() >= want })
}

func (l *steadyLoad) finish() []answer {
	close(l.stop)
	l.done.Wait()
	return l.answers
}

// outage sums up the answers between from and to: the longest time
// without any 2xx, and how many deliveries got no 2xx.
type outage struct {
	longestGap       time.Duration
	unavailable, err int
}

func summarize(answers []answer, from, to time.Time) outage {
	var o outage
	last := from
	for _, a := range answers { // in the order recorded, near enough in time
		if a.at.Before(from) || a.at.After(to) {
			continue
		}
		switch a.status {
		case http.StatusAccepted, http.StatusOK:
			o.longestGap = max(o.longestGap, a.at.Sub(last))
			last = a.at
		case http.StatusServiceUnavailable:
			o.unavailable++
		default:
			o.err++
		}
	}
	return o
}

// storedMessage is one event as the stream holds it.
type storedMessage struct {
	key, task string
}

// readStream reads every message of the stream in order.
func readStream(t *testing.T, js jetstream.JetStream, stream string, last uint64) map[uint64]storedMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[uint64]storedMessage{}
	var cons jetstream.Consumer
	for seq := uint64(0); seq < last; {
		if cons == nil {
			// From where the last one stopped: the cluster may still be
			// settling, and a consumer's server may go with a new leader.
			eventually(t, "an ordered consumer of the stream", func() bool {
				var err error
				cons, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
					DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1})
				return err == nil
			})
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err == nil {
			from := seq
			for m := range batch.Messages() {
				meta, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				var body struct {
					TaskID string `json:"task_id"`
				}
				_ = json.Unmarshal(m.Data(), &body)
				seq = meta.Sequence.Stream
				out[seq] = storedMessage{key: m.Headers().Get(nats.MsgIdHdr), task: body.TaskID}
			}
			if err = batch.Error(); err == nil && seq == from {
				err = fmt.Errorf("no event after %d", seq)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("reading the stream stopped at %d of %d: %v", seq, last, err)
			}
			cons = nil // read on with a new consumer
			continue
		}
	}
	return out
}

// TestClusterFailoverUnderLoad kills the stream leader's nats-server and
// then a taskledger replica, each with SIGKILL, while webhooks keep
// arriving, and restarts both. The replicas share four partitions of each
// projection. Every acknowledged event must be stored and
// projected exactly once; no answer may be a 2xx for an event the stream
// does not hold; the only failures allowed are 503 with Retry-After (and
// refused connections to the killed replica).
func TestClusterFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	cluster := testenv.NewCluster(t, 3)
	env := testenv.New(t)
	cfg := env.Config()
	onCluster(cluster)(&cfg)
	cfg.BatchSize, cfg.Partitions = 100, 4
	_, js := testenv.ConnectURL(t, cluster.URLs())
	replicas := []*replicaProcess{startReplicaProcess(t, "replica-a", cfg), startReplicaProcess(t, "replica-b", cfg)}

	load := startSteadyLoad(replicas, 6)
	load.waitMoreAcked(t, 200, "before any failure")

	leader := cluster.StreamLeader(t, js, cfg.Stream)
	leaderKilled := time.Now()
	leader.Kill()
	load.waitMoreAcked(t, 200, "after the stream leader was killed")
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	cluster.StreamLeader(t, js, cfg.Stream) // every replica current again
	load.waitMoreAcked(t, 200, "after the old leader rejoined")

	replicaKilled := time.Now()
	replicas[0].Kill()
	load.waitMoreAcked(t, 200, "while a taskledger replica is down")
	if err := replicas[0].Start(); err != nil {
		t.Fatal(err)
	}
	replicas[0].waitReady(t)
	load.waitMoreAcked(t, 200, "after the replica came back")
	finished := time.Now()
	answers := load.finish()

	leaderOutage := summarize(answers, leaderKilled, replicaKilled)
	replicaOutage := summarize(answers, replicaKilled, finished)
	t.Logf("stream leader %s killed: no 2xx for %v, %d answers 503; taskledger replica killed: no 2xx for %v, %d answers 503",
		leader.Name, leaderOutage.longestGap.Round(time.Millisecond), leaderOutage.unavailable,
		replicaOutage.longestGap.Round(time.Millisecond), replicaOutage.unavailable)

	if leaderOutage.unavailable == 0 {
		t.Error("no delivery was answered 503 while the stream elected a new leader")
	}
	// Every failure was a 503 with Retry-After or a refused connection.
	acked := map[uint64]string{}
	for _, a := range answers {
		switch a.status {
		case http.StatusAccepted, http.StatusOK:
			if prev, ok := acked[a.seq]; ok && prev != a.key {
				t.Errorf("sequence %d acknowledged for %s and %s", a.seq, prev, a.key)
			}
			acked[a.seq] = a.key
		case http.StatusServiceUnavailable:
			if a.retryAfter == "" {
				t.Errorf("503 without Retry-After at %v", a.at)
			}
		case 0:
		default:
			t.Errorf("unexpected answer %d at %v", a.status, a.at)
		}
	}

	// Every 2xx names an event the stream holds under that key, and the
	// stream holds each event once.
	var info *jetstream.StreamInfo
	eventually(t, "the stream's state", func() bool { // the cluster may still be settling
		s, err := js.Stream(context.Background(), cfg.Stream)
		if err == nil {
			info, err = s.Info(context.Background())
		}
		return err == nil
	})
	stored := readStream(t, js, cfg.Stream, info.State.LastSeq)
	for seq, key := range acked {
		if stored[seq].key != key {
			t.Errorf("2xx for %s at sequence %d, but the stream holds %q there", key, seq, stored[seq].key)
		}
	}
	keys := map[string]bool{}
	var wantRows []string
	for seq, m := range stored {
		if keys[m.key] {
			t.Errorf("the stream holds %s twice", m.key)
		}
		keys[m.key] = true
		wantRows = append(wantRows, fmt.Sprintf("%s %d", m.task, seq))
	}
	slices.Sort(wantRows)

	// Both replicas are ready and report every projection caught up, and
	// the all projection holds each stored event once, at its sequence.
	last := info.State.LastSeq
	for _, r := range replicas {
		r.waitReady(t)
		var status any
		defer func() {
			if t.Failed() {
				t.Logf("last answer of %s/v1/projections: %+v", r.url, status)
			}
		}()
		eventually(t, r.Name+" to report every projection caught up", func() bool {
			var body struct {
				Projections []struct {
					Name       string `json:"name"`
					Checkpoint uint64 `json:"checkpoint"`
					Partitions []struct {
						Active bool `json:"active"`
					} `json:"partitions"`
				} `json:"projections"`
			}
			getJSON(t, r.url+"/v1/projections", &body)
			status = body
			for _, p := range body.Projections {
				proj, _ := projections.ByName(p.Name)
				if p.Checkpoint != last || len(p.Partitions) != proj.PartitionsOf(cfg.Partitions) {
					return false
				}
				for _, part := range p.Partitions {
					if !part.Active {
						return false
					}
				}
			}
			return len(body.Projections) == len(projections.Every)
		})
	}
	pool := testenv.MigratedPool(t, cfg.DatabaseURL)
	var gotRows []string
	for _, r := range testenv.Rows(t, pool, "SELECT task_id, stream_seq FROM completions_all.completions") {
		gotRows = append(gotRows, fmt.Sprintf("%s %d", r[0], r[1]))
	}
	slices.Sort(gotRows)
	if !slices.Equal(gotRows, wantRows) {
		t.Errorf("completions_all holds %d rows, want the %d stored events once each; missing %v, unexpected %v",
			len(gotRows), len(wantRows), without(wantRows, gotRows), without(gotRows, wantRows))
	}
	t.Logf("%d events acknowledged, %d stored, %d answers in all", len(acked), len(stored), len(answers))
}

// TestStartWaitsForTheClusterToSettle starts taskledger while its cluster
// has lost two of three servers, and so its meta leader, and brings them
// back: the start must wait for JetStream to answer again instead of
// failing, as a replica restarted during an election would.
func TestStartWaitsForTheClusterToSettle(t *testing.T) {
	t.Parallel()
	cluster := testenv.NewCluster(t, 3)
	first := setup(t, onCluster(cluster))
	first.svc.Close(context.Background())

	for _, n := range cluster.Nodes[:2] {
		n.Kill()
	}
	opened := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		svc, err := service.Open(ctx, first.cfg, testLogger(t))
		if err == nil {
			svc.Close(context.Background())
		}
		opened <- err
	}()
	for _, n := range cluster.Nodes[:2] {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-opened; err != nil {
		t.Fatalf("open while the cluster elects its leaders: %v", err)
	}
}
