package eventlog

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestStartServerListensOnTheConfiguredHost: the client port is checked
// and bound on the configured loopback host, not on 127.0.0.1 whatever
// the host: taken there, it is ErrAddrInUse naming that address; taken
// only on 127.0.0.1, the server starts on its own host.
func TestStartServerListensOnTheConfiguredHost(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.2", "::1"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			busy, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("cannot listen on %s here: %v", host, err)
			}
			defer busy.Close()
			addr := busy.Addr().(*net.TCPAddr)
			_, err = StartServer(ServerOptions{StoreDir: t.TempDir(), Host: host, Port: addr.Port})
			if !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), addr.String()) {
				t.Errorf("port taken on %s: %v, want ErrAddrInUse naming %s", host, err, addr)
			}

			elsewhere, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer elsewhere.Close()
			port := elsewhere.Addr().(*net.TCPAddr).Port
			srv, err := StartServer(ServerOptions{StoreDir: t.TempDir(), Host: host, Port: port})
			if err != nil {
				t.Fatalf("port taken only on 127.0.0.1: %v, want the server started on %s", err, host)
			}
			defer srv.Shutdown()
			if got, want := srv.Addr().String(), net.JoinHostPort(host, strconv.Itoa(port)); got != want {
				t.Errorf("listens on %s, want %s", got, want)
			}
		})
	}
}
