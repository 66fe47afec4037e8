package domain

import (
	"bytes"
	"encoding/json"
)

// eachField calls visit with the name and raw value (exactly as written,
// without surrounding white space) of every top-level field of body, in
// order, and reports whether body is a JSON object. body must be valid
// UTF-8 and valid JSON (json.Valid). The names are decoded as encoding/json decodes them;
// a caller keeping the last value of a repeated name sees what decoding
// into a map[string]json.RawMessage gives, without allocating one.
func eachField(body []byte, visit func(name string, raw []byte)) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return true
	}
	for {
		end := endOfString(body, i)
		name := fieldName(body[i:end])
		i = skipSpace(body, skipSpace(body, end)+1) // past the colon
		end = endOfValue(body, i)
		visit(name, body[i:end])
		i = skipSpace(body, end)
		if body[i] == '}' {
			return true
		}
		i = skipSpace(body, i+1) // past the comma
	}
}

// fieldName decodes the string literal lit (quotes included).
func fieldName(lit []byte) string {
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1])
	}
	var s string
	_ = json.Unmarshal(lit, &s) // valid: the body is
	return s
}

// stringValue decodes the string literal lit (quotes included) as
// encoding/json does; ok is false when lit is not a string.
func stringValue(lit []byte) (s string, ok bool) {
	if len(lit) < 2 || lit[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), true
	}
	return s, json.Unmarshal(lit, &s) == nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the string literal starting at
// b[i] (a quote).
func endOfString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// endOfValue returns the index just past the value starting at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = endOfString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default: // a number, true, false or null
		for i < len(b) && !endsScalar(b[i]) {
			i++
		}
		return i
	}
}

// endsScalar reports whether c ends a number or literal in valid JSON.
func endsScalar(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
