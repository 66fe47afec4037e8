package main

import (
	"errors"
	"strings"
	"syscall"
	"testing"

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
		base, stop, logs, exit := startServing(t, a...)
		if stop != nil {
			return base, stop
		}
		if attempt == 3 || exit == nil || !errors.Is(exit, syscall.EADDRINUSE) && !strings.Contains(exit.Error(), "already in use") {
			t.Fatalf("%s exited early: %v\n%s", a[0], exit, logs)
		}
		t.Logf("port %d was taken before %s bound it; trying another", port, a[0])
	}
}
