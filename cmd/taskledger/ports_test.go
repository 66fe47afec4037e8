package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskledger/taskledger/internal/testenv"
)

// servingOnAPort is serving for a command that binds a port it is told up
// front (the embedded NATS server's, dev's Postgres's): args builds the
// command line from a loopback port free a moment ago, and when another
// process takes the port first, so that the command exits with "address
// already in use", it runs the command again on another.
func servingOnAPort(t *testing.T, args func(port int) []string) (base string, stop func() error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := testenv.FreePorts(t, 1)[0]
		a := args(port)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		logs := &syncBuffer{}
		go func() {
			done <- run(ctx, append(a, "-http-addr", "127.0.0.1:0", "-log-level", "info"), io.Discard, logs)
		}()
		base = ""
		var (
			exited bool
			exit   error
		)
		testenv.Poll(t, time.Minute, a[0]+" to answer ready", func() bool {
			select {
			case exit = <-done:
				exited = true
				return true
			default:
			}
			if base == "" {
				if addr := listeningAddr(logs.String()); addr != "" {
					base = "http://" + addr
				}
				return false
			}
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if !exited {
			return base, func() error {
				cancel()
				return <-done
			}
		}
		cancel()
		if attempt == 3 || exit == nil || !errors.Is(exit, syscall.EADDRINUSE) && !strings.Contains(exit.Error(), "already in use") {
			t.Fatalf("%s exited early: %v\n%s", a[0], exit, logs)
		}
		t.Logf("port %d was taken before %s bound it; trying another", port, a[0])
	}
}
