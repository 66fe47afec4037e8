package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServerPackage is built from the module graph, so the cluster runs
// exactly the nats-server version go.mod names.
const natsServerPackage = "github.com/nats-io/nats-server/v2"

// Cluster is a NATS cluster with JetStream of separate nats-server
// processes, routed to each other on loopback, each with its own store, so
// that a test can SIGKILL any node (the stream leader included) and start
// it again with its store.
type Cluster struct {
	Nodes []*ClusterNode
}

// ClusterNode is one server of a Cluster.
type ClusterNode struct {
	*Process
	ClientPort int
}

// URL is the node's client URL.
func (n *ClusterNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort) }

// NewCluster starts a cluster of size nodes named n1, n2, … for t, killed
// when t ends, and waits until JetStream answers on it. The nodes' ports
// are picked up front, as their routes name each other; when another
// process takes one before its node binds it, the cluster is started
// again on other ports.
func NewCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	bin := Binary(t, natsServerPackage)
	for attempt := 1; ; attempt++ {
		c := startCluster(t, bin, size)
		err := c.waitListening()
		if err == nil {
			c.WaitJetStream(t)
			return c
		}
		for _, n := range c.Nodes {
			n.Kill()
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == clusterStarts {
			t.Fatal(err)
		}
		t.Logf("%v; starting the cluster again on other ports", err)
	}
}

// clusterStarts bounds NewCluster's attempts at free ports.
const clusterStarts = 5

// startCluster starts the nodes of a cluster on ports free a moment ago.
func startCluster(t testing.TB, bin string, size int) *Cluster {
	t.Helper()
	ports := FreePorts(t, 2*size)
	var routes []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[size+i]))
	}
	c := &Cluster{}
	for i := range size {
		name := fmt.Sprintf("n%d", i+1)
		dir := t.TempDir()
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }
cluster {
  name: taskledger-test
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, name, ports[i], filepath.Join(dir, "store"), ports[size+i], strings.Join(routes, ", "))
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &ClusterNode{Process: NewProcess(t, name, bin, []string{"-c", path}, nil), ClientPort: ports[i]}
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, node)
	}
	return c
}

// waitListening waits until every node has bound its client and route
// ports, as its log says. A node that exits first fails it, with an error
// that is syscall.EADDRINUSE when a port was taken.
func (c *Cluster) waitListening() error {
	deadline := time.Now().Add(clusterWait)
	for {
		listening := 0
		for _, n := range c.Nodes {
			log := n.Log()
			switch {
			case n.exited() && strings.Contains(log, "address already in use"):
				return fmt.Errorf("%s could not bind its ports: %w", n.Name, syscall.EADDRINUSE)
			case n.exited():
				return fmt.Errorf("%s exited at start:\n%s", n.Name, log)
			case strings.Contains(log, "Listening for client connections") && strings.Contains(log, "Listening for route connections"):
				listening++
			}
		}
		if listening == len(c.Nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster's nodes did not listen within %v", clusterWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URLs lists every node's client URL, comma separated, as
// TASKLEDGER_NATS_URL takes them.
func (c *Cluster) URLs() string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name, failing t if there is none.
func (c *Cluster) Node(t testing.TB, name string) *ClusterNode {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no cluster node named %q", name)
	return nil
}

// clusterWait bounds the waits for the cluster to elect leaders.
const clusterWait = 60 * time.Second

// WaitJetStream waits until JetStream answers account requests, which
// needs a meta leader.
func (c *Cluster) WaitJetStream(t testing.TB) {
	t.Helper()
	Poll(t, clusterWait, "JetStream to answer on the cluster", func() bool {
		nc, err := nats.Connect(c.URLs())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
}

// StreamLeader waits until stream has a leader with every replica current
// and returns the leader's node.
func (c *Cluster) StreamLeader(t testing.TB, js jetstream.JetStream, stream string) *ClusterNode {
	t.Helper()
	var leader string
	Poll(t, clusterWait, "stream "+stream+" to have a leader and current replicas", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		leader = info.Cluster.Leader
		return true
	})
	return c.Node(t, leader)
}

// Poll checks cond every 20ms until it holds, failing t with what when it
// has not held within limit.
func Poll(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
