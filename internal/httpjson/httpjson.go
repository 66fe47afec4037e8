// Package httpjson writes taskledger's JSON responses and logs requests.
package httpjson

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Write sends v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
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
