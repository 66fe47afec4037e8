// Package sources knows the webhook senders: which source names are
// accepted, how each one's deliveries are verified, and where a sender puts
// its own delivery id. The set comes from TASKLEDGER_SOURCES_FILE, from the
// TASKLEDGER_SOURCES list, or is open to any well-formed name.
package sources

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/taskledger/taskledger/domain"
)

// Scheme is how a source signs its deliveries.
type Scheme string

// The signature schemes a source can declare in the sources file.
const (
	SchemeNone             Scheme = "none"
	SchemeStandardWebhooks Scheme = "standard-webhooks"
	SchemeHMACSHA256       Scheme = "hmac-sha256"
)

// DefaultTolerance is how far a Standard Webhooks timestamp may be from the
// receiver's clock, either way, when the file names no tolerance.
const DefaultTolerance = 5 * time.Minute

// Source is one sender and how its deliveries are checked.
type Source struct {
	Name   string
	Scheme Scheme
	// Secrets are the keys any one of which verifies a delivery (several
	// while rotating), already decoded: for Standard Webhooks the bytes
	// after whsec_, for hmac-sha256 the secret's own bytes.
	Secrets [][]byte
	// Tolerance bounds the age of a Standard Webhooks timestamp, either way.
	Tolerance time.Duration
	// IDHeader or IDField, when set, names where the sender puts its own
	// delivery id: a request header, or a top-level string field of the body.
	IDHeader string
	IDField  string
}

// Set is the sources a service accepts.
type Set struct {
	listed map[string]Source
	closed bool // only listed sources are accepted
}

// Open accepts every well-formed source name, unsigned.
func Open() *Set { return &Set{} }

// Names accepts only the named sources, unsigned (TASKLEDGER_SOURCES).
func Names(names []string) *Set {
	s := &Set{listed: map[string]Source{}, closed: len(names) > 0}
	for _, n := range names {
		s.listed[n] = Source{Name: n, Scheme: SchemeNone}
	}
	return s
}

// Lookup returns the source called name, and false when it is not accepted.
func (s *Set) Lookup(name string) (Source, bool) {
	if !domain.ValidSource(name) {
		return Source{}, false
	}
	if src, ok := s.listed[name]; ok {
		return src, true
	}
	return Source{Name: name, Scheme: SchemeNone}, !s.closed
}

// Listed is the names of the listed sources, sorted.
func (s *Set) Listed() []string {
	names := make([]string, 0, len(s.listed))
	for n := range s.listed {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// fileSource is one entry of the sources file as written.
type fileSource struct {
	Signature string         `yaml:"signature"`
	Secrets   []string       `yaml:"secrets"`
	Tolerance *time.Duration `yaml:"tolerance"`
	IDHeader  string         `yaml:"id_header"`
	IDField   string         `yaml:"id_field"`
}

type file struct {
	Sources map[string]fileSource `yaml:"sources"`
}

// Load reads the sources file at path; see Parse.
func Load(path string, lookupEnv func(string) (string, bool)) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sources file: %w", err)
	}
	set, err := Parse(data, lookupEnv)
	if err != nil {
		return nil, prefixLines(err, "sources file "+path+": ")
	}
	return set, nil
}

// Parse reads a sources file: only its sources are accepted. ${VAR} in a
// secret expands through lookupEnv. Every problem is reported, one per line
// of the returned error.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Set, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(strings.Join(te.Errors, "\n"))
		}
		return nil, err
	}
	if len(f.Sources) == 0 {
		return nil, errors.New(`names no sources: want a "sources:" map of source name to settings`)
	}
	set := &Set{listed: map[string]Source{}, closed: true}
	var problems []error
	names := make([]string, 0, len(f.Sources))
	for n := range f.Sources {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		src, errs := f.Sources[name].source(name, lookupEnv)
		problems = append(problems, errs...)
		set.listed[name] = src
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return set, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// source validates one entry, reporting each problem prefixed by its name.
func (fs fileSource) source(name string, lookupEnv func(string) (string, bool)) (Source, []error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("source %q: "+format, append([]any{name}, args...)...))
	}
	if !domain.ValidSource(name) {
		bad("not a valid source name ([a-z0-9][a-z0-9_-]{0,63})")
	}
	src := Source{Name: name, Scheme: Scheme(fs.Signature), Tolerance: DefaultTolerance,
		IDHeader: fs.IDHeader, IDField: fs.IDField}
	if src.Scheme == "" {
		src.Scheme = SchemeNone
	}
	switch src.Scheme {
	case SchemeNone:
		if len(fs.Secrets) > 0 {
			bad("signature none takes no secrets")
		}
	case SchemeStandardWebhooks, SchemeHMACSHA256:
		if len(fs.Secrets) == 0 {
			bad("signature %s needs at least one secret", src.Scheme)
		}
	default:
		bad("unknown signature %q: want standard-webhooks, hmac-sha256 or none", fs.Signature)
	}
	for i, raw := range fs.Secrets {
		secret, err := expand(raw, lookupEnv)
		if err == nil {
			var key []byte
			if key, err = decodeSecret(src.Scheme, secret); err == nil {
				src.Secrets = append(src.Secrets, key)
				continue
			}
		}
		bad("secret %d: %v", i, err)
	}
	if fs.Tolerance != nil {
		if src.Scheme != SchemeStandardWebhooks {
			bad("tolerance applies to standard-webhooks only")
		}
		if src.Tolerance = *fs.Tolerance; src.Tolerance <= 0 {
			bad("tolerance %v: must be positive", src.Tolerance)
		}
	}
	if fs.IDHeader != "" && fs.IDField != "" {
		bad("set id_header or id_field, not both")
	}
	if fs.IDHeader != "" && !validHeaderName(fs.IDHeader) {
		bad("id_header %q is not a header name", fs.IDHeader)
	}
	if fs.IDHeader != "" {
		src.IDHeader = textproto.CanonicalMIMEHeaderKey(fs.IDHeader)
	}
	return src, errs
}

// expand replaces each ${VAR} in s with the variable's value; an unset
// variable, or a secret that ends up empty, is an error.
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := lookupEnv(name)
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set", strings.Join(missing, ", "))
	}
	if out == "" {
		return "", errors.New("is empty")
	}
	return out, nil
}

// decodeSecret turns a secret as written into the HMAC key: Standard
// Webhooks secrets are base64 after an optional whsec_ prefix.
func decodeSecret(scheme Scheme, secret string) ([]byte, error) {
	if scheme != SchemeStandardWebhooks {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return nil, errors.New("not a Standard Webhooks secret: want whsec_ followed by base64")
	}
	return key, nil
}

var headerToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validHeaderName(s string) bool { return headerToken.MatchString(s) }

// prefixLines prefixes every line of err's message.
func prefixLines(err error, prefix string) error {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return errors.New(strings.Join(lines, "\n"))
}
