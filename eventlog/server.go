// Package eventlog is taskledger's side of NATS JetStream: starting an
// embedded server, connecting, declaring the event stream, appending webhook
// events with Nats-Msg-Id deduplication, and decoding them back.
package eventlog

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions configures an in-process JetStream server.
type ServerOptions struct {
	// StoreDir holds the file store. Required.
	StoreDir string
	// Host is the loopback address the client port listens on; empty
	// means 127.0.0.1.
	Host string
	// Port is the client port on Host; 0 listens on no port (clients
	// connect in-process) and -1 picks a free port.
	Port int
	// Credentials, when set, are required of every client, in-process
	// ones included; without them the server takes anyone (tests only).
	Credentials *Credentials
	// SyncInterval is the store's own fsync period (0 means the server
	// default, two minutes). Messages are written to the operating system
	// before the acknowledgement; GroupSync puts acknowledged ones on disk
	// sooner.
	SyncInterval time.Duration
}

// ErrAddrInUse is returned by StartServer when its client address (host
// and port) is taken.
var ErrAddrInUse = errors.New("address in use")

// StartServer starts a JetStream-enabled nats-server in this process and
// waits until it accepts connections.
func StartServer(o ServerOptions) (*server.Server, error) {
	opts := &server.Options{
		ServerName:   "taskledger-embedded",
		JetStream:    true,
		StoreDir:     o.StoreDir,
		SyncInterval: o.SyncInterval,
		Host:         cmp.Or(o.Host, "127.0.0.1"),
		Port:         o.Port,
		DontListen:   o.Port == 0,
		NoSigs:       true,
		NoLog:        true,
	}
	if o.Port > 0 {
		// nats-server does not report a failed listen; it only never
		// becomes ready. Find out first, and say so at once.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(o.Port))
		ln, err := net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			err = fmt.Errorf("%w (%w)", ErrAddrInUse, err)
		}
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server cannot listen on %s: %w", addr, err)
		}
		ln.Close()
	}
	if o.Credentials != nil {
		opts.Username, opts.Password = o.Credentials.User, o.Credentials.Password
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start within 10s (store dir %s)", o.StoreDir)
	}
	return ns, nil
}
