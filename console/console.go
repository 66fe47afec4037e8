// Package console serves the operator console, a single page of plain
// HTML, CSS and JavaScript embedded in the binary: no CDN, no build step.
// It talks to the same JSON API as every other client, sending the admin
// token (kept in the browser's session storage) as a bearer token.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/taskledger/taskledger/internal/httpjson"
)

//go:embed static
var static embed.FS

// securityHeaders keep the page to its own origin: no inline scripts, no
// framing, nothing loaded from elsewhere.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
}

// Register serves the console at GET /ui and its assets under /ui/.
func Register(mux *http.ServeMux) {
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	mux.Handle("GET /ui", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, assets, "index.html")
	})))
	mux.Handle("GET /ui/{file}", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if info, err := fs.Stat(assets, name); err != nil || info.IsDir() {
			httpjson.Error(w, http.StatusNotFound, httpjson.CodeNotFound, "the console has no file "+strconv.Quote(name))
			return
		}
		http.ServeFileFS(w, r, assets, name)
	})))
}

func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, value := range securityHeaders {
			w.Header().Set(name, value)
		}
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}
