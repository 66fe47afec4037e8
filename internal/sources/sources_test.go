package sources

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
}

func TestParseTheContractExample(t *testing.T) {
	t.Parallel()
	file := `
sources:
  tallyfy:
    signature: standard-webhooks        # standard-webhooks | hmac-sha256 | none
    secrets: ["${TALLYFY_WEBHOOK_SECRET}", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    tolerance: 2m
  github:
    signature: hmac-sha256
    secrets: ["${GITHUB_WEBHOOK_SECRET}"]
    id_header: X-GitHub-Delivery
  asyncqueue:
    signature: none
    id_header: x-asyncqueue-task-id
  stripe:
    id_field: id
  internal:
    signature: none
`
	set, err := Parse([]byte(file), env(map[string]string{
		"TALLYFY_WEBHOOK_SECRET": "whsec_c2Vjb25k", "GITHUB_WEBHOOK_SECRET": "gh-$ecret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Listed(), ","); got != "asyncqueue,github,internal,stripe,tallyfy" {
		t.Errorf("listed %s", got)
	}
	tallyfy, ok := set.Lookup("tallyfy")
	if !ok || tallyfy.Scheme != SchemeStandardWebhooks || len(tallyfy.Secrets) != 2 ||
		string(tallyfy.Secrets[0]) != "second" || tallyfy.Tolerance != 2*time.Minute {
		t.Errorf("tallyfy = %+v", tallyfy)
	}
	github, _ := set.Lookup("github")
	if github.Scheme != SchemeHMACSHA256 || string(github.Secrets[0]) != "gh-$ecret" || github.IDHeader != "X-Github-Delivery" {
		t.Errorf("github = %+v", github)
	}
	if aq, _ := set.Lookup("asyncqueue"); aq.IDHeader != "X-Asyncqueue-Task-Id" || aq.Scheme != SchemeNone {
		t.Errorf("asyncqueue = %+v", aq)
	}
	if st, _ := set.Lookup("stripe"); st.IDField != "id" || st.Scheme != SchemeNone {
		t.Errorf("stripe = %+v", st)
	}
	if _, ok := set.Lookup("zapier"); ok {
		t.Error("an unlisted source is accepted")
	}
}

func TestParseReportsEveryProblemOnItsOwnLine(t *testing.T) {
	t.Parallel()
	file := `
sources:
  a:
    signature: rot13
  b:
    signature: standard-webhooks
    secrets: ["not base64!"]
  c:
    signature: hmac-sha256
    secrets: ["", "${UNSET_SECRET}"]
  d:
    signature: hmac-sha256
  e:
    secrets: ["x"]
    tolerance: 1m
  Bad.Name:
    signature: none
  f:
    id_header: "bad header"
    id_field: id
`
	_, err := Parse([]byte(file), env(nil))
	if err == nil {
		t.Fatal("a bad file parsed")
	}
	want := []string{
		`source "Bad.Name": not a valid source name`,
		`source "a": unknown signature "rot13"`,
		`source "b": secret 0: not a Standard Webhooks secret`,
		`source "c": secret 0: is empty`,
		`source "c": secret 1: environment variable UNSET_SECRET is not set`,
		`source "d": signature hmac-sha256 needs at least one secret`,
		`source "e": signature none takes no secrets`,
		`source "e": tolerance applies to standard-webhooks only`,
		`source "f": set id_header or id_field, not both`,
		`source "f": id_header "bad header" is not a header name`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestParseRefusesMalformedFiles(t *testing.T) {
	t.Parallel()
	for name, file := range map[string]string{
		"not yaml":      "sources: [unclosed",
		"unknown key":   "sources:\n  a:\n    signatur: none\n",
		"no sources":    "sources: {}\n",
		"empty":         "",
		"bad tolerance": "sources:\n  a:\n    signature: standard-webhooks\n    secrets: [whsec_c2Vjb25k]\n    tolerance: soon\n",
		"neg tolerance": "sources:\n  a:\n    signature: standard-webhooks\n    secrets: [whsec_c2Vjb25k]\n    tolerance: -1m\n",
		"wrong type":    "sources:\n  a:\n    secrets: 7\n",
	} {
		if _, err := Parse([]byte(file), env(nil)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(path, []byte("sources:\n  a:\n    signature: x\n  b:\n    signature: y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, env(nil))
	if err == nil || strings.Count(err.Error(), "sources file "+path+": ") != 2 {
		t.Errorf("Load = %v, want two lines naming the file", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), env(nil)); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestOpenAndNamedSets(t *testing.T) {
	t.Parallel()
	if src, ok := Open().Lookup("anything"); !ok || src.Scheme != SchemeNone {
		t.Errorf("open set: %+v %v", src, ok)
	}
	if _, ok := Open().Lookup("Not/Valid"); ok {
		t.Error("a malformed name is accepted")
	}
	named := Names([]string{"tallyfy"})
	if _, ok := named.Lookup("tallyfy"); !ok {
		t.Error("a named source is refused")
	}
	if _, ok := named.Lookup("zapier"); ok {
		t.Error("an unnamed source is accepted")
	}
}
