package sources

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks specification's own test vector.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = 1614265330
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// GitHub's documented test vector.
const (
	githubSecret = "It's a Secret to Everybody"
	githubBody   = "Hello, World!"
	githubSig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
)

func standardSource(t testing.TB, secrets ...string) Source {
	t.Helper()
	src := Source{Name: "s", Scheme: SchemeStandardWebhooks, Tolerance: DefaultTolerance}
	for _, s := range secrets {
		key, err := decodeSecret(SchemeStandardWebhooks, s)
		if err != nil {
			t.Fatal(err)
		}
		src.Secrets = append(src.Secrets, key)
	}
	return src
}

func standardHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestStandardWebhooksSpecVector(t *testing.T) {
	t.Parallel()
	src := standardSource(t, specSecret)
	at := time.Unix(specTS, 0)
	got, err := src.Verify(standardHeaders(specID, specTS, specSig), []byte(specBody), at)
	if err != nil || got.Scheme != "standard-webhooks" || got.Secret != 0 {
		t.Fatalf("spec vector: %+v, %v", got, err)
	}
	if sig, _ := SignStandardWebhooks(specSecret, specID, specTS, []byte(specBody)); sig != specSig {
		t.Errorf("SignStandardWebhooks = %q, want %q", sig, specSig)
	}
	// One byte of the body changed no longer verifies.
	if _, err := src.Verify(standardHeaders(specID, specTS, specSig), []byte(`{"test": 2432232315}`), at); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("altered body: %v, want ErrSignatureInvalid", err)
	}
}

func TestHMACSHA256GitHubVector(t *testing.T) {
	t.Parallel()
	src := Source{Name: "github", Scheme: SchemeHMACSHA256, Secrets: [][]byte{[]byte(githubSecret)}}
	for _, header := range []string{"X-Hub-Signature-256", "X-Signature-256"} {
		h := http.Header{}
		h.Set(header, githubSig)
		got, err := src.Verify(h, []byte(githubBody), time.Now())
		if err != nil || got.Scheme != "hmac-sha256" || got.Secret != 0 {
			t.Errorf("%s: %+v, %v", header, got, err)
		}
	}
	if sig := SignHMACSHA256(githubSecret, []byte(githubBody)); sig != githubSig {
		t.Errorf("SignHMACSHA256 = %q", sig)
	}
}

func TestVerifyRefusals(t *testing.T) {
	t.Parallel()
	std := standardSource(t, specSecret)
	at := time.Unix(specTS, 0)
	hmacSrc := Source{Name: "g", Scheme: SchemeHMACSHA256, Secrets: [][]byte{[]byte(githubSecret)}}
	hub := func(v string) http.Header { h := http.Header{}; h.Set("X-Hub-Signature-256", v); return h }
	tests := []struct {
		name string
		src  Source
		h    http.Header
		body string
		now  time.Time
		want error
	}{
		{"no headers", std, http.Header{}, specBody, at, ErrSignatureMissing},
		{"no signature", std, standardHeaders(specID, specTS, ""), specBody, at, ErrSignatureMissing},
		{"v2 only", std, standardHeaders(specID, specTS, strings.Replace(specSig, "v1,", "v2,", 1)), specBody, at, ErrSignatureInvalid},
		{"not base64", std, standardHeaders(specID, specTS, "v1,!!!"), specBody, at, ErrSignatureInvalid},
		{"other id", std, standardHeaders("msg_other", specTS, specSig), specBody, at, ErrSignatureInvalid},
		{"too old", std, standardHeaders(specID, specTS, specSig), specBody, at.Add(DefaultTolerance + time.Second), ErrSignatureExpired},
		{"from the future", std, standardHeaders(specID, specTS, specSig), specBody, at.Add(-DefaultTolerance - time.Second), ErrSignatureExpired},
		{"hmac missing", hmacSrc, http.Header{}, githubBody, at, ErrSignatureMissing},
		{"hmac without prefix", hmacSrc, hub(strings.TrimPrefix(githubSig, "sha256=")), githubBody, at, ErrSignatureInvalid},
		{"hmac short", hmacSrc, hub("sha256=abcd"), githubBody, at, ErrSignatureInvalid},
		{"hmac wrong body", hmacSrc, hub(githubSig), githubBody + " ", at, ErrSignatureInvalid},
	}
	for _, tt := range tests {
		if _, err := tt.src.Verify(tt.h, []byte(tt.body), tt.now); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	// Inside the tolerance either way verifies.
	for _, d := range []time.Duration{DefaultTolerance, -DefaultTolerance} {
		if _, err := std.Verify(standardHeaders(specID, specTS, specSig), []byte(specBody), at.Add(d)); err != nil {
			t.Errorf("skew %v: %v", d, err)
		}
	}
}

func TestRotationReportsWhichSecretVerified(t *testing.T) {
	t.Parallel()
	const newer = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="
	src := standardSource(t, newer, specSecret)
	newSig, _ := SignStandardWebhooks(newer, specID, specTS, []byte(specBody))
	at := time.Unix(specTS, 0)
	for _, tt := range []struct {
		header string
		want   int
	}{
		{specSig, 1},
		{newSig, 0},
		{"v1,bm90LXRoZS1zaWduYXR1cmUtYXQtYWxsLXJlYWxseQ== " + specSig, 1}, // several, one valid
		{specSig + " " + newSig, 0},
	} {
		got, err := src.Verify(standardHeaders(specID, specTS, tt.header), []byte(specBody), at)
		if err != nil || got.Secret != tt.want {
			t.Errorf("%q: secret %d, %v; want %d", tt.header, got.Secret, err, tt.want)
		}
	}
}

// FuzzVerify: any headers and body either verify or fail with one of the
// three documented errors, and never panic.
func FuzzVerify(f *testing.F) {
	f.Add(specID, "1614265330", specSig, []byte(specBody), githubSig)
	f.Add("", "", "", []byte(""), "")
	f.Add("id", "-99999999999999999999", "v1, v1,,, v2,abc", []byte("x"), "sha256=zz")
	f.Add("id", "9223372036854775807", "v1,"+strings.Repeat("A", 44), []byte("{}"), "sha256="+strings.Repeat("0", 64))
	std := standardSource(f, specSecret)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte, hubSig string) {
		h := standardHeaders(id, 0, sig)
		h.Set("webhook-timestamp", ts)
		h.Set("X-Hub-Signature-256", hubSig)
		hm := Source{Name: "g", Scheme: SchemeHMACSHA256, Secrets: [][]byte{[]byte(githubSecret)}}
		for _, src := range []Source{std, hm} {
			got, err := src.Verify(h, body, time.Unix(specTS, 0))
			switch {
			case err == nil && got.Scheme != string(src.Scheme):
				t.Fatalf("verified as %q by a %s source", got.Scheme, src.Scheme)
			case err != nil && !errors.Is(err, ErrSignatureMissing) && !errors.Is(err, ErrSignatureInvalid) &&
				!errors.Is(err, ErrSignatureExpired):
				t.Fatalf("undocumented error %v", err)
			}
		}
	})
}
