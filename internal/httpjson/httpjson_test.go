package httpjson

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWriteEncodesBeforeTheStatus(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	// A time past year 9999 cannot be encoded as RFC 3339.
	Write(rec, http.StatusOK, map[string]time.Time{"at": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	var body ErrorBody
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error.Code != "internal" {
		t.Errorf("got %d %q, want 500 with the error body", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	Write(rec, http.StatusAccepted, map[string]int{"n": 1})
	if rec.Code != http.StatusAccepted || rec.Body.String() != "{\"n\":1}\n" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("got %d %q", rec.Code, rec.Body)
	}
}

func TestRouterErrorsAnswerJSON(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		Write(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	mux.HandleFunc("GET /dir/", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := RouterErrors(mux)
	for _, tt := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/nowhere", 404, "not_found", ""},
		{"GET", "/v1/things/7", 405, "method_not_allowed", "POST"},
		{"POST", "/v1/things/7", 200, "", ""},
		{"GET", "/dir", http.StatusTemporaryRedirect, "", ""}, // the mux's redirect to the canonical path is kept
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		var body ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != tt.status || body.Error.Code != tt.code || rec.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d %q allow %q, want %d %q %q", tt.method, tt.path, rec.Code, body.Error.Code,
				rec.Header().Get("Allow"), tt.status, tt.code, tt.allow)
		}
	}
}
