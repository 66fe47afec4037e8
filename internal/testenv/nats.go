package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/taskledger/taskledger/eventlog"
)

// NATSServer is an in-process JetStream server that a test may stop and
// start again on the same port and store, to exercise outages.
type NATSServer struct {
	mu       sync.Mutex
	storeDir string
	port     int
	srv      *server.Server
}

// NewNATSServer starts a private server for t, shut down when t ends.
func NewNATSServer(t testing.TB) *NATSServer {
	t.Helper()
	n := &NATSServer{storeDir: t.TempDir(), port: -1}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// URL is the server's client URL; it stays the same across restarts.
func (n *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// Start starts the server (again), keeping its port and stored streams.
func (n *NATSServer) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	srv, err := eventlog.StartServer(eventlog.ServerOptions{StoreDir: n.storeDir, Port: n.port})
	if err != nil {
		return err
	}
	n.srv, n.port = srv, srv.Addr().(*net.TCPAddr).Port
	return nil
}

// Stop shuts the server down, as a crash of the NATS process would.
func (n *NATSServer) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// startProcessNATS starts the shared in-process server for the whole test
// binary; it lives as long as the process.
func startProcessNATS() (*server.Server, error) {
	dir, err := processDir("taskledger-test-nats-")
	if err != nil {
		return nil, err
	}
	return eventlog.StartServer(eventlog.ServerOptions{StoreDir: dir, Port: -1})
}

// processDir creates a directory under the system's temporary directory
// named prefix and this process's id, for files that live as long as the
// test binary. Directories of processes that have ended are removed first.
func processDir(prefix string) (string, error) {
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range stale {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), prefix))
		if err == nil && syscall.Kill(pid, 0) != nil {
			os.RemoveAll(dir)
		}
	}
	dir := filepath.Join(os.TempDir(), prefix+strconv.Itoa(os.Getpid()))
	return dir, os.MkdirAll(dir, 0o700)
}
