package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/testenv"
)

// The embedded server's listener takes only the credentials kept in the
// data directory: another local process cannot append to the stream around
// the webhook endpoint, while replay finds them and works.
func TestEmbeddedListenerRequiresTheDataDirCredentials(t *testing.T) {
	dataDir, dbURL := t.TempDir(), testenv.NewDatabase(t)
	var natsAddr string
	var flags []string
	_, stop := servingOnAPort(t, func(port int) []string {
		natsAddr = fmt.Sprintf("127.0.0.1:%d", port)
		flags = []string{"-data-dir", dataDir, "-database-url", dbURL, "-embedded-nats-addr", natsAddr}
		return append([]string{"serve"}, flags...)
	})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve returned %v", err)
		}
	}()

	info, err := os.Stat(filepath.Join(dataDir, eventlog.CredentialsFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v; want mode 0600", info, err)
	}
	for name, url := range map[string]string{
		"anonymous":      "nats://" + natsAddr,
		"wrong password": "nats://taskledger:guess@" + natsAddr,
	} {
		if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("%s: connected to the embedded server", name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization violation", name, err)
		}
	}
	creds, err := eventlog.ReadCredentials(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(creds.URL(natsAddr))
	if err != nil {
		t.Fatalf("with the data dir's credentials: %v", err)
	}
	nc.Close()

	// replay reaches the running service's server with them.
	if err := run(t.Context(), append([]string{"replay", "--projection", "completions_all", "-log-level", "error"}, flags...),
		os.Stdout, os.Stderr); err != nil {
		t.Errorf("replay against the running service: %v", err)
	}
}
