package eventlog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// CredentialsFile is the file under the data directory holding the
// embedded server's client credentials, "user:password" on one line, only
// its owner may read it. `taskledger replay` and NATS tools read it there:
//
//	nats -s "nats://$(cat data/nats-credentials)@127.0.0.1:4223" stream ls
const CredentialsFile = "nats-credentials"

// credentialsUser is the one user of the embedded server.
const credentialsUser = "taskledger"

// Credentials authenticate a client to the embedded server.
type Credentials struct {
	User, Password string
}

// URL is a NATS URL for addr carrying the credentials.
func (c Credentials) URL(addr string) string {
	return (&url.URL{Scheme: "nats", User: url.UserPassword(c.User, c.Password), Host: addr}).String()
}

// LoadOrCreateCredentials reads dir's credentials file, creating it on
// first start with a random password, mode 0600.
func LoadOrCreateCredentials(dir string) (Credentials, error) {
	c, err := ReadCredentials(dir)
	if !errors.Is(err, fs.ErrNotExist) {
		return c, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Credentials{}, fmt.Errorf("generate NATS credentials: %w", err)
	}
	c = Credentials{User: credentialsUser, Password: hex.EncodeToString(secret)}
	path := filepath.Join(dir, CredentialsFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Credentials{}, fmt.Errorf("create NATS credentials %s: %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%s:%s\n", c.User, c.Password); err != nil {
		f.Close()
		return Credentials{}, fmt.Errorf("write NATS credentials %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return Credentials{}, fmt.Errorf("write NATS credentials %s: %w", path, err)
	}
	return c, nil
}

// ReadCredentials reads dir's credentials file. It refuses a file that
// others than its owner may read or write: they could append to the
// stream around the webhook endpoint's checks. Errors wrap fs.ErrNotExist
// when there is no file yet.
func ReadCredentials(dir string) (Credentials, error) {
	path := filepath.Join(dir, CredentialsFile)
	info, err := os.Stat(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("NATS credentials: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return Credentials{}, fmt.Errorf("NATS credentials %s have mode %04o: others may read them; run chmod 600 %s", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("NATS credentials: %w", err)
	}
	user, password, ok := strings.Cut(strings.TrimSpace(string(raw)), ":")
	if !ok || user == "" || password == "" {
		return Credentials{}, fmt.Errorf("NATS credentials %s: want one line user:password; delete the file to have a new one made at the next start", path)
	}
	return Credentials{User: user, Password: password}, nil
}
