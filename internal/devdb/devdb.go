// Package devdb finds or starts a Postgres for a development machine, so
// that `make run` works on a fresh checkout: the configured server when it
// answers; else a private cluster under the data directory, made with the
// installed server programs (initdb, pg_ctl); else the Docker Compose
// postgres service; else it explains how to install one.
package devdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// ErrNoPostgres is returned by Ensure when nothing answers and nothing could
// be started; its message says how to install Postgres.
var ErrNoPostgres = errors.New("no Postgres answers and none can be started here")

// Options says where the database should be and where to look for the
// means to start one. Only URL and Dir are required.
type Options struct {
	// URL is the configured database URL; a private cluster listens on its
	// host and port and lets its user in without a password.
	URL string
	// Dir holds the private cluster (made by initdb on first use).
	Dir string
	// BinDirs are searched for initdb and pg_ctl after $PATH. Nil means the
	// usual places of Debian/Ubuntu, Red Hat and Homebrew packages.
	BinDirs []string
	// Docker is the docker program; empty means "docker" on $PATH.
	Docker string
	// ComposeDir holds docker-compose.yml; empty means the working directory.
	ComposeDir string
	// RunAs is the unprivileged user that owns and runs the private cluster
	// when this process is root (initdb refuses to run as root). Empty means
	// "postgres" when that user exists, else "nobody".
	RunAs string
	// Log reports what was found or started.
	Log zerolog.Logger
}

// Started is a Postgres that Ensure started; Stop stops it again. A
// Postgres that was already running, or the Compose service, is left alone.
type Started struct {
	stop func(context.Context) error
}

// Stop stops the private cluster Ensure started, if any.
func (s *Started) Stop(ctx context.Context) error {
	if s == nil || s.stop == nil {
		return nil
	}
	return s.stop(ctx)
}

// Ensure returns once a Postgres server answers at o.URL's host and port,
// starting one when none does. It only checks that a server answers: a
// wrong role or password, or a missing database, is for the caller to
// handle. The returned Started stops what Ensure started.
func Ensure(ctx context.Context, o Options) (*Started, error) {
	cfg, err := pgx.ParseConfig(o.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if answers(ctx, cfg) {
		o.Log.Info().Str("addr", addr).Msg("Postgres answers")
		return &Started{}, nil
	}
	if !isLoopback(cfg.Host) {
		return nil, fmt.Errorf("no Postgres answers at %s, which is not this machine: start it there", addr)
	}
	if bin := findBinDir(o.BinDirs); bin != "" {
		return startCluster(ctx, o, cfg, bin)
	}
	if dockerAnswers(ctx, o.docker()) {
		return startCompose(ctx, o, cfg)
	}
	return nil, fmt.Errorf("%w at %s: neither Postgres's server programs (initdb, pg_ctl) nor Docker were found. Install one:\n"+
		"  Debian/Ubuntu: sudo apt-get install postgresql\n"+
		"  macOS:         brew install postgresql@16\n"+
		"  Docker:        install Docker (https://docs.docker.com/get-docker/)\n"+
		"then run this again", ErrNoPostgres, addr)
}

// answers reports whether a Postgres server answers at cfg's address:
// a connection, or any refusal from the server itself.
func answers(ctx context.Context, cfg *pgx.ConnConfig) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		conn.Close(ctx)
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultBinDirs are where packages install the server programs, newest
// version first within each pattern.
var defaultBinDirs = []string{
	"/usr/lib/postgresql/*/bin",         // Debian, Ubuntu
	"/usr/pgsql-*/bin",                  // Red Hat, PGDG
	"/opt/homebrew/opt/postgresql*/bin", // Homebrew on Apple silicon
	"/usr/local/opt/postgresql*/bin",    // Homebrew on Intel
	"/Applications/Postgres.app/Contents/Versions/latest/bin",
}

// findBinDir is the first directory holding both initdb and pg_ctl: $PATH
// first, then dirs (glob patterns).
func findBinDir(dirs []string) string {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(initdb)
		}
	}
	if dirs == nil {
		dirs = defaultBinDirs
	}
	for _, pattern := range dirs {
		matches, _ := filepath.Glob(pattern)
		sort.Sort(sort.Reverse(byVersion(matches)))
		for _, dir := range matches {
			if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl")) {
				return dir
			}
		}
	}
	return ""
}

// byVersion orders paths by the first number in them, so that
// postgresql/16 comes after postgresql/9.
type byVersion []string

func (b byVersion) Len() int           { return len(b) }
func (b byVersion) Swap(i, j int)      { b[i], b[j] = b[j], b[i] }
func (b byVersion) Less(i, j int) bool { return versionOf(b[i]) < versionOf(b[j]) }

func versionOf(path string) int {
	digits := strings.TrimLeftFunc(path, func(r rune) bool { return r < '0' || r > '9' })
	end := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		digits = digits[:end]
	}
	n, _ := strconv.Atoi(digits)
	return n
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// startCluster makes (first time) and starts a private cluster in o.Dir,
// listening on cfg's address only, trusting local connections of cfg's user.
func startCluster(ctx context.Context, o Options, cfg *pgx.ConnConfig, bin string) (*Started, error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	run, err := o.runner()
	if err != nil {
		return nil, err
	}
	if err := run.prepare(dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		o.Log.Info().Str("dir", dir).Str("initdb", filepath.Join(bin, "initdb")).Msg("creating a private Postgres cluster")
		if err := run.cmd(ctx, filepath.Join(bin, "initdb"), "-D", dir, "-U", cfg.User, "-A", "trust", "-E", "UTF8"); err != nil {
			return nil, fmt.Errorf("initdb %s: %w", dir, err)
		}
	}
	// Sockets only on TCP: a Unix socket path under a deep directory can be
	// too long, and the default socket directory may not be writable.
	opts := fmt.Sprintf("-p %d -c listen_addresses=%s -c unix_socket_directories=''", cfg.Port, cfg.Host)
	logFile := filepath.Join(dir, "server.log")
	if err := run.cmd(ctx, filepath.Join(bin, "pg_ctl"), "start", "-w", "-t", "60", "-D", dir, "-l", logFile, "-o", opts); err != nil {
		return nil, fmt.Errorf("start the private Postgres cluster in %s: %w; its log %s ends: %s", dir, err, logFile, logTail(logFile))
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	o.Log.Info().Str("dir", dir).Str("addr", addr).Msg("private Postgres cluster started; it stops when taskledger does")
	return &Started{stop: func(ctx context.Context) error {
		if err := run.cmd(ctx, filepath.Join(bin, "pg_ctl"), "stop", "-w", "-m", "fast", "-D", dir); err != nil {
			return fmt.Errorf("stop the private Postgres cluster in %s: %w", dir, err)
		}
		o.Log.Info().Str("dir", dir).Msg("private Postgres cluster stopped")
		return nil
	}}, nil
}

// logTail is the last lines of the server's log, where it says why it did
// not start (a port in use, say).
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// runner runs the server programs: as this process's user, or, when that
// is root, as an unprivileged one through runuser.
type runner struct {
	user *user.User // nil: run as this process
}

func (o Options) runner() (runner, error) {
	if os.Geteuid() != 0 {
		return runner{}, nil
	}
	names := []string{o.RunAs}
	if o.RunAs == "" {
		names = []string{"postgres", "nobody"}
	}
	for _, name := range names {
		if u, err := user.Lookup(name); err == nil {
			return runner{user: u}, nil
		}
	}
	return runner{}, fmt.Errorf("running as root, and no user %s to run Postgres as (initdb refuses root)", strings.Join(names, " or "))
}

// prepare creates dir, owned by the user that runs the cluster, and checks
// that user can reach it.
func (r runner) prepare(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if r.user == nil {
		return nil
	}
	uid, _ := strconv.Atoi(r.user.Uid)
	gid, _ := strconv.Atoi(r.user.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("give %s to user %s: %w", dir, r.user.Username, err)
	}
	// The cluster's parent (the data directory) must let that user pass
	// through; search permission only, not listing.
	parent := filepath.Dir(dir)
	if st, err := os.Stat(parent); err == nil && st.Mode().Perm()&0o001 == 0 {
		if err := os.Chmod(parent, st.Mode().Perm()|0o001); err != nil {
			return fmt.Errorf("let user %s reach %s: %w", r.user.Username, dir, err)
		}
	}
	if err := exec.Command("runuser", "-u", r.user.Username, "--", "test", "-w", dir).Run(); err != nil {
		return fmt.Errorf("user %s, which runs the private Postgres cluster because initdb refuses root, cannot reach %s: "+
			"give it search permission on every parent directory, or use a data directory elsewhere", r.user.Username, dir)
	}
	return nil
}

// cmd runs name with args to completion, as the runner's user; its output
// becomes part of the error when it fails.
func (r runner) cmd(ctx context.Context, name string, args ...string) error {
	if r.user != nil {
		args = append([]string{"-u", r.user.Username, "--", name}, args...)
		name = "runuser"
	}
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = "/" // the programs refuse a working directory their user cannot read
	// Its own process group: Ctrl-C on the terminal reaches taskledger,
	// which stops the cluster after its own drain, not the cluster directly.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (o Options) docker() string {
	if o.Docker == "" {
		return "docker"
	}
	return o.Docker
}

// dockerAnswers reports whether docker and its compose plugin are installed
// and the daemon answers.
func dockerAnswers(ctx context.Context, docker string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, docker, "compose", "version").Run() == nil &&
		exec.CommandContext(ctx, docker, "info").Run() == nil
}

// startCompose starts the Compose postgres service and waits until it is
// healthy. It keeps running after taskledger stops, as Compose services do.
func startCompose(ctx context.Context, o Options, cfg *pgx.ConnConfig) (*Started, error) {
	o.Log.Info().Msg("starting Postgres with `docker compose up -d --wait postgres`")
	c := exec.CommandContext(ctx, o.docker(), "compose", "up", "-d", "--wait", "postgres")
	c.Dir = o.ComposeDir
	if out, err := c.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("docker compose up postgres: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if !answers(ctx, cfg) {
		return nil, fmt.Errorf("the Compose postgres service started but does not answer at %s:%d", cfg.Host, cfg.Port)
	}
	o.Log.Info().Msg("Compose postgres service started; stop it with `docker compose stop postgres`")
	return &Started{}, nil
}
