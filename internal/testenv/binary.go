package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	binariesMu sync.Mutex
	binaries   = map[string]*builtBinary{}
	binaryDir  string
)

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds the main package pkg (a package path resolved in this
// module's graph, e.g. github.com/nats-io/nats-server/v2) once per test
// binary and returns the path of the executable. Tests that need real
// processes to kill use it: a nats-server of exactly the version in go.mod,
// or taskledger itself.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	binariesMu.Lock()
	if binaryDir == "" {
		dir, err := processDir("taskledger-test-bin-")
		if err != nil {
			binariesMu.Unlock()
			t.Fatal(err)
		}
		binaryDir = dir
	}
	b := binaries[pkg]
	if b == nil {
		b = &builtBinary{}
		binaries[pkg] = b
	}
	dir := binaryDir
	binariesMu.Unlock()

	b.once.Do(func() {
		name := strings.NewReplacer("/", "_", ".", "_").Replace(pkg)
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// moduleRoot is the directory of this module's go.mod, found upwards from
// the test's working directory (its package directory).
func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
