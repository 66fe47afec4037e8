package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/taskledger/taskledger/api"
)

// apiDocument is api/openapi.json loaded, validated, and routed, once per
// test binary.
var apiDocument = sync.OnceValues(func() (*apiDoc, error) {
	// The console's page and assets are text; their bodies are checked for
	// their media type only.
	for _, mediaType := range []string{"text/html", "text/css", "text/javascript", "image/svg+xml"} {
		openapi3filter.RegisterBodyDecoder(mediaType, openapi3filter.PlainBodyDecoder)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &apiDoc{doc: doc, router: router}, nil
})

type apiDoc struct {
	doc    *openapi3.T
	router routers.Router
}

func TestOpenAPIDocumentIsValidAndServed(t *testing.T) {
	t.Parallel()
	d, err := apiDocument()
	if err != nil {
		t.Fatalf("api/openapi.json: %v", err)
	}
	if !d.doc.IsOpenAPI31OrLater() || d.doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", d.doc.OpenAPI)
	}
	b := setup(t, nil)
	resp, err := http.Get(b.url + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	served, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(served, api.OpenAPI) {
		t.Errorf("GET /openapi.json: %d, %d bytes; want 200 and the embedded document", resp.StatusCode, len(served))
	}
}

// TestOpenAPIValidatorCatchesDrift proves the check that every other test
// relies on can fail: answers the document does not describe are caught.
func TestOpenAPIValidatorCatchesDrift(t *testing.T) {
	t.Parallel()
	d, err := apiDocument()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, method, path string
		status             int
		body               string
	}{
		{"undocumented status", "GET", "/healthz", http.StatusTeapot, `{"status":"ok"}`},
		{"undocumented field", "GET", "/healthz", http.StatusOK, `{"status":"ok","extra":1}`},
		{"undocumented error code", "GET", "/v1/tasks/t/completions", http.StatusNotFound,
			`{"error":{"code":"no_such_code","message":"m"}}`},
		{"missing Retry-After", "POST", "/v1/webhooks/s", http.StatusServiceUnavailable,
			`{"error":{"code":"stream_unavailable","message":"m"}}`},
		{"undocumented endpoint", "GET", "/v1/nowhere", http.StatusOK, `{}`},
		{"router error without the error body", "GET", "/v1/nowhere", http.StatusNotFound, "404 page not found\n"},
	} {
		req, _ := http.NewRequest(tt.method, "http://localhost"+tt.path, nil)
		header := http.Header{"Content-Type": {"application/json"}}
		if err := d.check(req, tt.status, header, []byte(tt.body)); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	req, _ := http.NewRequest("GET", "http://localhost/v1/nowhere", nil)
	if err := d.check(req, http.StatusNotFound, http.Header{"Content-Type": {"application/json"}},
		[]byte(`{"error":{"code":"not_found","message":"m"}}`)); err != nil {
		t.Errorf("router 404 with the error body refused: %v", err)
	}
}

// conforming wraps h so that every answer it gives is checked against the
// OpenAPI document: an undocumented endpoint, status, header or body fails
// t. Answers stream through unchanged.
func conforming(t testing.TB, h http.Handler) http.Handler {
	d, err := apiDocument()
	if err != nil {
		t.Fatalf("api/openapi.json: %v", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &teeWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if err := d.check(r, rec.status, w.Header(), rec.body.Bytes()); err != nil {
			t.Errorf("%s %s answered %d, which api/openapi.json does not describe: %v\nbody: %.500s",
				r.Method, r.URL, rec.status, err, rec.body.Bytes())
		}
	})
}

// check validates one answer to req against the document. An endpoint
// the document does not have may only answer the router's 404 or 405,
// with the error body.
func (d *apiDoc) check(req *http.Request, status int, header http.Header, body []byte) error {
	route, params, err := d.router.FindRoute(req)
	var noRoute *routers.RouteError // the router's only error: no path, or no method
	if errors.As(err, &noRoute) {
		if !slices.Contains([]int{http.StatusNotFound, http.StatusMethodNotAllowed}, status) {
			return err
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return errors.New("the router's answer is not the JSON error body")
		}
		return d.doc.Components.Schemas["Error"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
	}
	if err != nil {
		return err
	}
	return openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
}

// teeWriter passes an answer through while keeping its status and body.
type teeWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.wrote = true
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController flush through to the connection.
func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends what was written so far, for streamed answers.
func (w *teeWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }
