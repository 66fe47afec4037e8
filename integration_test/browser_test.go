package integration_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumNames are the executables tried, in order, when
// TASKLEDGER_TEST_CHROMIUM does not name one.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// findChromium returns the browser the console tests drive. A missing
// browser fails the test: the console is tested in a real browser or not
// at all, and .ci/run installs Debian's chromium.
func findChromium(t *testing.T) string {
	t.Helper()
	if path := os.Getenv("TASKLEDGER_TEST_CHROMIUM"); path != "" {
		return path
	}
	for _, name := range chromiumNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatalf("no Chromium found (tried %s, or set TASKLEDGER_TEST_CHROMIUM): install it with "+
		"`apt-get install chromium`, as .ci/run does", strings.Join(chromiumNames, ", "))
	return ""
}

// browser is a headless Chromium tab and every console message it wrote.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

// handledStatus matches the browser's own log line for an API answer the
// console shows in words (a 4xx from /v1/): that is the page working.
var handledStatus = regexp.MustCompile(`status of 4\d\d`)

// newBrowser starts headless Chromium for t with a laptop-sized window. When
// t ends it fails t for every console error, warning or uncaught exception
// the pages produced.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findChromium(t)),
		chromedp.Flag("no-sandbox", true), // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{ctx: ctx}
	messages := chromedp.Console(ctx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		cancelAlloc()
		t.Fatalf("start Chromium: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				if m.Type != chromedp.ConsoleException && strings.Contains(m.URL, "/v1/") && handledStatus.MatchString(m.Text) {
					continue
				}
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s at %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
		for _, p := range b.problems {
			t.Errorf("browser console: %s", p)
		}
	})
	return b
}

// do runs actions in the tab, failing t on an error.
func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitLimit)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page into a value of type T.
func eval[T any](t *testing.T, b *browser, expression string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expression, err)
	}
	return v
}

// waitFor polls a JavaScript expression in the page until it is true.
func (b *browser) waitFor(t *testing.T, what, expression string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !eval[bool](t, b, "Boolean("+expression+")") {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s (%s)", waitLimit, what, expression)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot saves the whole page as name.png in TASKLEDGER_CONSOLE_SCREENSHOTS
// (make screenshots sets it to docs/), or else in the test's temporary
// directory.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("TASKLEDGER_CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(b.ctx, waitLimit)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
