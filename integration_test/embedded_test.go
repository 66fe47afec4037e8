package integration_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/testenv"
)

// The embedded server listens on the configured loopback host, not on
// 127.0.0.1 whatever is configured, and only with the data dir's
// credentials.
func TestEmbeddedServerListensOnTheConfiguredHost(t *testing.T) {
	t.Parallel()
	cfg := embeddedConfig(t, testenv.NewDatabase(t), t.TempDir())
	var port int
	for attempt := 0; ; attempt++ { // another process may take the port first
		port = testenv.FreePorts(t, 1)[0]
		cfg.EmbeddedNATSAddr = netip.MustParseAddrPort(fmt.Sprintf("127.0.0.2:%d", port))
		svc, err := service.Open(context.Background(), cfg, testLogger(t))
		if errors.Is(err, eventlog.ErrAddrInUse) && attempt < 3 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.Close(context.Background()) })
		break
	}

	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("the embedded server also listens on 127.0.0.1:%d", port)
	}
	creds, err := eventlog.LoadOrCreateCredentials(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.2:%d", port), nats.UserInfo(creds.User, creds.Password))
	if err != nil {
		t.Fatalf("connect to the configured address: %v", err)
	}
	nc.Close()
}
