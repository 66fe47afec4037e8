package eventlog

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialsAreMadeOnceAndKeptPrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ReadCredentials(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no file yet: %v, want fs.ErrNotExist", err)
	}
	c, err := LoadOrCreateCredentials(dir)
	if err != nil || c.User == "" || len(c.Password) < 32 {
		t.Fatalf("created %+v, %v", c, err)
	}
	path := filepath.Join(dir, CredentialsFile)
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode(), err)
	}
	again, err := LoadOrCreateCredentials(dir)
	if err != nil || again != c {
		t.Errorf("second start got %+v, %v; want the same credentials", again, err)
	}
	if other, _ := LoadOrCreateCredentials(t.TempDir()); other.Password == c.Password {
		t.Error("two data directories share a password")
	}
	if u := c.URL("127.0.0.1:4223"); !strings.HasPrefix(u, "nats://taskledger:"+c.Password+"@127.0.0.1:4223") {
		t.Errorf("URL %q", u)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCredentials(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable file: %v, want a refusal naming chmod 600", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCredentials(dir); err == nil {
		t.Error("a malformed file was read")
	}
}
