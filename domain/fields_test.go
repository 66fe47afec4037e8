package domain

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzEachField checks the field scanner against encoding/json: for any
// valid UTF-8 JSON, it finds an object exactly when decoding into a map does, and
// the same fields with the same raw values, the last of a repeated name
// winning, and each string value decoded alike. The seed corpus runs as
// part of `go test`.
func FuzzEachField(f *testing.F) {
	for _, seed := range []string{
		completion, `{}`, ` { "a" : [1, {"b": "}"}], "c": null } `, `{"a":1,"a":"two"}`, `null`, `[{"a":1}]`,
		`"s"`, `{"k\u0065y":"v","e\"sc":"\\"}`, `{"n":-1.5e3,"t":true,"f":false}`, `{"a":{"b":{"c":[[]]}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || !json.Valid(body) {
			return // what ParseEvent refuses before scanning
		}
		got := map[string][]byte{}
		isObject := eachField(body, func(name string, raw []byte) { got[name] = raw })
		var want map[string]json.RawMessage
		err := json.Unmarshal(body, &want)
		if isObject != (err == nil && want != nil) {
			t.Fatalf("%q: object %v, encoding/json: %v, %v", body, isObject, want, err)
		}
		if !isObject {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: fields %q, encoding/json %q", body, got, want)
		}
		for name, raw := range want {
			if !bytes.Equal(got[name], raw) {
				t.Fatalf("%q: field %q is %q, encoding/json %q", body, name, got[name], raw)
			}
			var s string
			err := json.Unmarshal(raw, &s) // null decodes to "": optionalString takes it first
			if v, ok := stringValue(raw); string(raw) != "null" && (ok != (err == nil) || v != s) {
				t.Fatalf("%q: string %q, %v; encoding/json %q, %v", raw, v, ok, s, err)
			}
		}
	})
}
