package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a program a test runs, kills with SIGKILL and starts again,
// as a crash and a restart by a supervisor would. Its output goes to a log
// file whose tail is printed if the test fails. It is killed when the test
// ends, and also if the test binary dies first.
type Process struct {
	Name string
	path string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// NewProcess prepares (without starting) the executable at path with args
// and env added to this process's environment.
func NewProcess(t testing.TB, name, path string, args, env []string) *Process {
	t.Helper()
	p := &Process{Name: name, path: path, args: args, env: env,
		log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("warnings and errors of %s:\n%s\nlast lines of its output:\n%s", name, problems(p.log, 40), tail(p.log, 20))
		}
	})
	return p
}

// Start starts the process, which must not be running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "--- started %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone. It does nothing
// when the process is not running.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd, p.done = nil, nil
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	started, exited := p.state()
	return started && !exited
}

// exited reports whether the process was started and has exited since,
// without being killed by Kill.
func (p *Process) exited() bool {
	_, exited := p.state()
	return exited
}

// state reports whether the process was started (and not killed by Kill
// since), and whether it has exited by itself.
func (p *Process) state() (started, exited bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false, false
	}
	select {
	case <-p.done:
		return true, true
	default:
		return true, false
	}
}

// Pid is the process id of the running process; 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Log is the process's output so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-n):], []byte("\n")))
}

// problems returns up to n lines of the log at path that a JSON logger
// wrote at warn level or above, leaving out the 503 answers of ingest
// (expected while NATS elects a leader).
func problems(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if (bytes.Contains(line, []byte(`"level":"warn"`)) || bytes.Contains(line, []byte(`"level":"error"`))) &&
			!bytes.Contains(line, []byte("answering 503")) {
			out = append(out, line)
		}
	}
	return string(bytes.Join(out[:min(len(out), n)], []byte("\n")))
}

// FreePorts returns n loopback TCP ports that were free a moment ago, for
// servers that must know each other's ports before they start. Another
// process may take one before its server binds it: a caller starts again
// on other ports when its server fails with "address already in use".
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are picked, so none repeats
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}
