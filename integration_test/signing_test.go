package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/internal/sources"
	"github.com/taskledger/taskledger/internal/testenv"
)

const (
	oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"     // the Standard Webhooks spec's
	newSecret = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=" // the one rotated in
	hubSecret = "It's a Secret to Everybody"
)

// signedSources is a sources file with one source per scheme and id
// location, plus an unsigned "probe" source used to prove that refused
// requests stored nothing.
func signedSources(t *testing.T) string {
	t.Helper()
	varName := "TASKLEDGER_TEST_NEW_SECRET_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.Setenv(varName, newSecret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Unsetenv(varName) })
	file := fmt.Sprintf(`
sources:
  tallyfy:
    signature: standard-webhooks
    secrets: ["${%s}", %q]
    tolerance: 1m
  github:
    signature: hmac-sha256
    secrets: [%q]
    id_header: X-GitHub-Delivery
  stripe:
    signature: none
    id_field: id
  probe: {}
`, varName, oldSecret, hubSecret)
	path := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func setupSigned(t *testing.T) *bundle {
	t.Helper()
	path := signedSources(t)
	return setup(t, func(c *config.Config) { c.SourcesFile = path })
}

// refused sends a request that must be refused with status and code, and
// proves that it stored nothing: the next accepted event's stream sequence
// is the previous one plus one.
func (b *bundle) refused(t *testing.T, what string, status int, code string, send func() reply) {
	t.Helper()
	before := b.lastSeq(t)
	if r := send(); r.Status != status || r.Error.Code != code || r.Error.Message == "" {
		t.Errorf("%s: got %d %q %q, want %d %q", what, r.Status, r.Error.Code, r.Error.Message, status, code)
	}
	probe := b.post(t, "probe", completion(fmt.Sprintf("probe-%d", before), "2024-01-15T10:30:00Z"))
	if probe.Status != http.StatusAccepted || probe.StreamSeq != before+1 {
		t.Errorf("%s: the next accepted event got %+v, want seq %d: the refused request stored something", what, probe, before+1)
	}
}

// standardHeaders signs body for Standard Webhooks at time at.
func standardHeaders(t *testing.T, secret, id string, at time.Time, body string) []string {
	t.Helper()
	sig, err := sources.SignStandardWebhooks(secret, id, at.Unix(), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return []string{"webhook-id", id, "webhook-timestamp", strconv.FormatInt(at.Unix(), 10), "webhook-signature", sig}
}

func (b *bundle) storedHeader(t *testing.T, seq uint64) nats.Header {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header
}

func TestSignedDeliveriesAreVerifiedAndRecorded(t *testing.T) {
	t.Parallel()
	b := setupSigned(t)
	body := completion("t-signed", "2024-01-15T10:30:00Z")

	// Standard Webhooks, signed with either secret while rotating; several
	// signatures in the header, one of them valid, verify too.
	r := b.post(t, "tallyfy", body, standardHeaders(t, oldSecret, "msg_1", time.Now(), body)...)
	if r.Status != http.StatusAccepted || r.DedupKey != "tallyfy:id:msg_1" {
		t.Fatalf("signed with the old secret: %+v", r)
	}
	h := b.storedHeader(t, r.StreamSeq)
	if h.Get(eventlog.HeaderSignatureScheme) != "standard-webhooks" || h.Get(eventlog.HeaderSignatureSecret) != "1" {
		t.Errorf("stored signature %q secret %q, want standard-webhooks and secret 1",
			h.Get(eventlog.HeaderSignatureScheme), h.Get(eventlog.HeaderSignatureSecret))
	}
	body2 := completion("t-signed", "2024-01-16T10:30:00Z")
	headers := standardHeaders(t, newSecret, "msg_2", time.Now().Add(-30*time.Second), body2)
	headers[5] = "v1,bm90LXRoZS1zaWduYXR1cmUtYXQtYWxsLXJlYWxseQ== " + headers[5]
	if r = b.post(t, "tallyfy", body2, headers...); r.Status != http.StatusAccepted {
		t.Fatalf("signed with the new secret: %+v", r)
	}
	if got := b.storedHeader(t, r.StreamSeq).Get(eventlog.HeaderSignatureSecret); got != "0" {
		t.Errorf("stored secret index %q, want 0", got)
	}
	// A redelivery with the same webhook-id is a duplicate.
	if again := b.post(t, "tallyfy", body2, headers...); again.Status != http.StatusOK || again.StreamSeq != r.StreamSeq {
		t.Errorf("redelivery: %+v", again)
	}

	// hmac-sha256 with GitHub's header; X-GitHub-Delivery is the key.
	hub := sources.SignHMACSHA256(hubSecret, []byte(body))
	r = b.post(t, "github", body, "X-Hub-Signature-256", hub, "X-GitHub-Delivery", "72d3162e-cc78")
	if r.Status != http.StatusAccepted || r.DedupKey != "github:id:72d3162e-cc78" {
		t.Fatalf("github: %+v", r)
	}
	h = b.storedHeader(t, r.StreamSeq)
	if h.Get(eventlog.HeaderSignatureScheme) != "hmac-sha256" || h.Get(eventlog.HeaderSignatureSecret) != "0" ||
		h.Get(eventlog.HeaderRequestPrefix+"X-Github-Delivery") != "72d3162e-cc78" {
		t.Errorf("github stored headers %v", h)
	}
	for _, hdr := range h {
		for _, v := range hdr {
			if strings.Contains(v, hubSecret) || strings.Contains(v, oldSecret) {
				t.Errorf("a secret was stored: %v", h)
			}
		}
	}
	// X-Signature-256 is accepted as well.
	body3 := completion("t-signed", "2024-01-17T10:30:00Z")
	if r = b.post(t, "github", body3, "X-Signature-256", sources.SignHMACSHA256(hubSecret, []byte(body3))); r.Status != http.StatusAccepted {
		t.Errorf("X-Signature-256: %+v", r)
	}

	// Unsigned sources record that they were not verified.
	r = b.post(t, "probe", completion("t-unsigned", "2024-01-15T10:30:00Z"))
	if h = b.storedHeader(t, r.StreamSeq); h.Get(eventlog.HeaderSignatureScheme) != "none" || h.Get(eventlog.HeaderSignatureSecret) != "" {
		t.Errorf("unsigned stored headers %v", h)
	}
}

func TestBadSignaturesAre401AndStoreNothing(t *testing.T) {
	t.Parallel()
	b := setupSigned(t)
	body := completion("t-bad", "2024-01-15T10:30:00Z")
	post := func(source, body string, headers ...string) func() reply {
		return func() reply { return b.post(t, source, body, headers...) }
	}
	valid := standardHeaders(t, oldSecret, "msg_1", time.Now(), body)
	without := func(name string) []string {
		var out []string
		for i := 0; i < len(valid); i += 2 {
			if valid[i] != name {
				out = append(out, valid[i], valid[i+1])
			}
		}
		return out
	}
	otherKey := standardHeaders(t, "whsec_"+"b3RoZXIta2V5LW5vdC1saXN0ZWQ=", "msg_1", time.Now(), body)
	for _, tt := range []struct {
		name   string
		send   func() reply
		status int
		code   string
	}{
		{"no signature headers", post("tallyfy", body), 401, httpjson.CodeSignatureMissing},
		{"no webhook-signature", post("tallyfy", body, without("webhook-signature")...), 401, httpjson.CodeSignatureMissing},
		{"no webhook-timestamp", post("tallyfy", body, without("webhook-timestamp")...), 401, httpjson.CodeSignatureMissing},
		{"unlisted secret", post("tallyfy", body, otherKey...), 401, httpjson.CodeSignatureInvalid},
		{"body altered", post("tallyfy", strings.Replace(body, "t-bad", "t-bad2", 1), valid...), 401, httpjson.CodeSignatureInvalid},
		{"garbage signature", post("tallyfy", body, append(without("webhook-signature"), "webhook-signature", "v1,???")...), 401, httpjson.CodeSignatureInvalid},
		{"too old", post("tallyfy", body, standardHeaders(t, oldSecret, "msg_1", time.Now().Add(-2*time.Minute), body)...), 401, httpjson.CodeSignatureExpired},
		{"from the future", post("tallyfy", body, standardHeaders(t, oldSecret, "msg_1", time.Now().Add(2*time.Minute), body)...), 401, httpjson.CodeSignatureExpired},
		{"hmac missing", post("github", body), 401, httpjson.CodeSignatureMissing},
		{"hmac wrong", post("github", body, "X-Hub-Signature-256", sources.SignHMACSHA256("wrong", []byte(body))), 401, httpjson.CodeSignatureInvalid},
		{"hmac not hex", post("github", body, "X-Hub-Signature-256", "sha256=xyz"), 401, httpjson.CodeSignatureInvalid},
		{"unlisted source", post("zapier", body), 404, httpjson.CodeUnknownSource},
	} {
		b.refused(t, tt.name, tt.status, tt.code, tt.send)
	}
}

func TestSourceDeliveryIDsTakeTheirPlaceInTheKeyPrecedence(t *testing.T) {
	t.Parallel()
	b := setupSigned(t)
	body := func(task string) string { return completion(task, "2024-01-15T10:30:00Z") }
	hub := func(b string) string { return sources.SignHMACSHA256(hubSecret, []byte(b)) }

	// id_field: the body's own id, ahead of event_id.
	stripe := `{"id":"evt_1","event":"task.completed","task_id":"s1","completed_at":"2024-01-15T10:30:00Z","event_id":"e-1"}`
	if r := b.post(t, "stripe", stripe); r.Status != http.StatusAccepted || r.DedupKey != "stripe:id:evt_1" {
		t.Errorf("id_field: %+v", r)
	}
	// Without the field, the next layers apply.
	if r := b.post(t, "stripe", body("s2")); r.Status != http.StatusAccepted || !strings.HasPrefix(r.DedupKey, "stripe:derived:") {
		t.Errorf("id_field absent: %+v", r)
	}
	b.refused(t, "id_field not a string", 422, domain.CodeInvalidField, func() reply {
		return b.post(t, "stripe", `{"id":42,"event":"task.completed","task_id":"s3","completed_at":"2024-01-15T10:30:00Z"}`)
	})
	// Idempotency-Key beats id_header, which beats webhook-id and event_id.
	b1 := body("g1")
	if r := b.post(t, "github", b1, "X-Hub-Signature-256", hub(b1), "X-GitHub-Delivery", "d-1", "Idempotency-Key", "k-1"); r.DedupKey != "github:id:k-1" {
		t.Errorf("Idempotency-Key first: %+v", r)
	}
	b2 := `{"event":"task.completed","task_id":"g2","completed_at":"2024-01-15T10:30:00Z","event_id":"e-2"}`
	if r := b.post(t, "github", b2, "X-Hub-Signature-256", hub(b2), "X-GitHub-Delivery", "d-2", "webhook-id", "msg_2"); r.DedupKey != "github:id:d-2" {
		t.Errorf("id_header before webhook-id and event_id: %+v", r)
	}
	// A redelivery (GitHub keeps the delivery id) is a duplicate.
	if r := b.post(t, "github", b2, "X-Hub-Signature-256", hub(b2), "X-GitHub-Delivery", "d-2"); r.Status != http.StatusOK {
		t.Errorf("redelivery: %+v", r)
	}
}

// A sender-chosen key equal to the tail of another event's derived key
// neither is answered as that event's duplicate nor pre-empts it, in
// either order.
func TestSenderKeysCannotCollideWithDerivedKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	derivedOf := func(body string) string {
		ev, err := domain.ParseEvent("tallyfy", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		k, _ := domain.DeriveDedupKey(ev, domain.KeyHeaders{})
		return strings.TrimPrefix(k.Value, "tallyfy:")
	}
	for _, layer := range []string{"Idempotency-Key", "event_id"} {
		// Derived first, then a sender key equal to its tail.
		victim := completion("victim-1-"+layer, "2024-01-15T10:30:00Z")
		first := b.post(t, "tallyfy", victim)
		attacker := b.sendWithKey(t, layer, completion("attacker-1-"+layer, "2024-01-15T10:30:00Z"), derivedOf(victim))
		if first.Status != http.StatusAccepted || attacker.Status != http.StatusAccepted || attacker.StreamSeq != first.StreamSeq+1 {
			t.Errorf("%s after derived: victim %+v, attacker %+v; want both stored", layer, first, attacker)
		}
		// The sender key first, then the event whose derived key it imitates.
		victim = completion("victim-2-"+layer, "2024-01-15T10:30:00Z")
		attacker = b.sendWithKey(t, layer, completion("attacker-2-"+layer, "2024-01-15T10:30:00Z"), derivedOf(victim))
		second := b.post(t, "tallyfy", victim)
		if attacker.Status != http.StatusAccepted || second.Status != http.StatusAccepted || second.StreamSeq != attacker.StreamSeq+1 {
			t.Errorf("%s before derived: attacker %+v, victim %+v; want both stored", layer, attacker, second)
		}
	}
}

// sendWithKey posts body from tallyfy with key as its Idempotency-Key header
// or as its event_id.
func (b *bundle) sendWithKey(t *testing.T, layer, body, key string) reply {
	t.Helper()
	if layer == "event_id" {
		return b.post(t, "tallyfy", strings.Replace(body, `{`, fmt.Sprintf(`{"event_id":%q,`, key), 1))
	}
	return b.post(t, "tallyfy", body, layer, key)
}

func TestABadSourcesFileStopsTheStartWithALinePerProblem(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	cfg := env.Config()
	cfg.SourcesFile = filepath.Join(t.TempDir(), "sources.yaml")
	file := "sources:\n  a:\n    signature: rot13\n  b:\n    signature: hmac-sha256\n    secrets: [\"${TASKLEDGER_TEST_SURELY_UNSET}\"]\n"
	if err := os.WriteFile(cfg.SourcesFile, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	svc, err := service.Open(context.Background(), cfg, testLogger(t))
	if err == nil {
		svc.Close(context.Background())
		t.Fatal("the service started with a bad sources file")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"a": unknown signature "rot13"`) ||
		!strings.Contains(lines[1], "TASKLEDGER_TEST_SURELY_UNSET is not set") {
		t.Errorf("error:\n%v", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(cfg.SourcesFile)) {
		t.Errorf("the error does not name the file: %v", err)
	}
}
