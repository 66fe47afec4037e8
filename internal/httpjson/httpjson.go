// Package httpjson writes taskledger's JSON responses and logs requests.
package httpjson

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Write sends v as JSON with the given status. v is encoded before the
// status is written, so a value that cannot be encoded is answered 500
// with the error body, never a success status with a broken body.
func Write(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(ErrorBody{ErrorDetail{Code: CodeInternal, Message: "the answer could not be encoded: " + err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail carries a stable machine-readable code and a human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error sends {"error":{"code":…,"message":…}} with the given status.
func Error(w http.ResponseWriter, status int, code, message string) {
	Write(w, status, ErrorBody{ErrorDetail{Code: code, Message: message}})
}

// RouterErrors answers the requests mux has no route for with the JSON
// error body: 404 not_found, or 405 method_not_allowed with the Allow
// header the mux would send. Requests with a route go to mux unchanged.
func RouterErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// The mux's own answer: a redirect to the canonical path, 404 or 405.
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		switch probe.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", probe.header.Get("Allow"))
			Error(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
				fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow")))
		case http.StatusNotFound:
			Error(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// statusProbe records the status and headers a handler would answer.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(status int) {
	if p.status == 0 {
		p.status = status
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

type logFieldsKey struct{}

// AddLogField attaches a field to the request's log line.
func AddLogField(ctx context.Context, key, value string) {
	if f, ok := ctx.Value(logFieldsKey{}).(*[][2]string); ok {
		*f = append(*f, [2]string{key, value})
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// LogRequests logs one line per request with method, path, status, latency
// and the fields handlers added with AddLogField.
func LogRequests(log zerolog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var fields [][2]string
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), logFieldsKey{}, &fields)))
		ev := log.Info()
		if rec.status >= 500 {
			ev = log.Warn()
		}
		ev = ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).
			Dur("latency_ms", time.Since(start))
		for _, f := range fields {
			ev = ev.Str(f[0], f[1])
		}
		ev.Msg("request")
	})
}
