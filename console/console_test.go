package console_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/taskledger/taskledger/console"
)

func TestConsoleServesItsEmbeddedFiles(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	console.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tt := range []struct {
		path, contentType, contains string
		status                      int
	}{
		{"/ui", "text/html", `<script src="/ui/console.js" defer></script>`, http.StatusOK},
		{"/ui/console.js", "text/javascript", "function route()", http.StatusOK},
		{"/ui/console.css", "text/css", ".progress", http.StatusOK},
		{"/ui/favicon.svg", "image/svg+xml", "<svg", http.StatusOK},
		{"/ui/no-such-file.js", "application/json", `"code":"not_found"`, http.StatusNotFound},
		{"/ui/..%2fconsole.go", "application/json", `"code":"not_found"`, http.StatusNotFound},
	} {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) ||
			!strings.Contains(string(body), tt.contains) {
			t.Errorf("GET %s: %d %s %.80q, want %d %s containing %q", tt.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), body, tt.status, tt.contentType, tt.contains)
		}
		if tt.status == http.StatusNotFound && !json.Valid(body) {
			t.Errorf("GET %s: the 404 body is not JSON", tt.path)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") ||
			strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: Content-Security-Policy %q", tt.path, csp)
		}
	}
}
