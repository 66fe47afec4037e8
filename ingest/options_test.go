package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestZeroOptionsTakeDefaults: a handler built with zero options has a
// clock, accepts any well-formed source, and answers a bad body with 400
// before it would append anything.
func TestZeroOptionsTakeDefaults(t *testing.T) {
	t.Parallel()
	h := New(nil, Options{}, zerolog.Nop())
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/{source}", h)
	req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/tallyfy", strings.NewReader("not json"))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid_json") {
		t.Errorf("answer %d %s, want 400 invalid_json", rec.Code, rec.Body.String())
	}
	if h.opts.Now == nil || h.opts.MaxBodyBytes != 1<<20 || h.opts.PublishTimeout <= 0 || h.opts.Sources == nil {
		t.Errorf("defaults not filled: %+v", h.opts)
	}
}
