package sources

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/taskledger/taskledger/domain"
)

// Verification failures, each answered 401 with its own code.
var (
	ErrSignatureMissing = errors.New("signature required")
	ErrSignatureInvalid = errors.New("signature does not verify")
	ErrSignatureExpired = errors.New("signature timestamp outside the tolerance")
)

// Verify checks a delivery's signature over the raw body bytes, comparing
// in constant time, and returns which scheme and secret verified it.
// Errors wrap ErrSignatureMissing, ErrSignatureInvalid or
// ErrSignatureExpired. A source with scheme none verifies every delivery.
func (s Source) Verify(h http.Header, body []byte, now time.Time) (domain.Signature, error) {
	switch s.Scheme {
	case SchemeStandardWebhooks:
		return s.verifyStandardWebhooks(h, body, now)
	case SchemeHMACSHA256:
		return s.verifyHMACSHA256(h, body)
	default:
		return domain.Signature{Scheme: string(SchemeNone), Secret: -1}, nil
	}
}

// verifyStandardWebhooks: HMAC-SHA256 of "id.timestamp.body", base64, sent
// as space-separated "v1,<sig>" entries in webhook-signature; one valid v1
// entry suffices. The timestamp is checked after the signature, so
// "expired" is only ever said of an authentic delivery.
func (s Source) verifyStandardWebhooks(h http.Header, body []byte, now time.Time) (domain.Signature, error) {
	id, ts, header := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature")
	if id == "" || ts == "" || header == "" {
		return domain.Signature{}, fmt.Errorf("%w: standard-webhooks needs the webhook-id, webhook-timestamp and webhook-signature headers", ErrSignatureMissing)
	}
	sigs := ParseStandardSignatures(header)
	if len(sigs) == 0 {
		return domain.Signature{}, fmt.Errorf("%w: webhook-signature holds no v1,<base64> signature", ErrSignatureInvalid)
	}
	content := make([]byte, 0, len(id)+len(ts)+len(body)+2)
	content = append(append(append(append(append(content, id...), '.'), ts...), '.'), body...)
	i := matchSecret(s.Secrets, content, sigs)
	if i < 0 {
		return domain.Signature{}, fmt.Errorf("%w: no v1 signature matches any secret of source %q", ErrSignatureInvalid, s.Name)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return domain.Signature{}, fmt.Errorf("%w: webhook-timestamp %q is not Unix seconds", ErrSignatureInvalid, ts)
	}
	if skew := now.Sub(time.Unix(sec, 0)).Abs(); skew > s.Tolerance || sec > maxUnix || sec < -maxUnix {
		return domain.Signature{}, fmt.Errorf("%w: webhook-timestamp %d is more than %v from now", ErrSignatureExpired, sec, s.Tolerance)
	}
	return domain.Signature{Scheme: string(SchemeStandardWebhooks), Secret: i}, nil
}

// maxUnix keeps time arithmetic on timestamps clear of overflow.
const maxUnix = 1 << 40

// ParseStandardSignatures returns the decoded v1 signatures of a
// webhook-signature header; entries of other versions or not base64 are
// skipped.
func ParseStandardSignatures(header string) [][]byte {
	var sigs [][]byte
	for _, entry := range strings.Fields(header) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		if raw, err := base64.StdEncoding.DecodeString(sig); err == nil && len(raw) == sha256.Size {
			sigs = append(sigs, raw)
		}
	}
	return sigs
}

// verifyHMACSHA256: X-Hub-Signature-256 or X-Signature-256 holds
// "sha256=<hex of HMAC-SHA256(secret, body)>".
func (s Source) verifyHMACSHA256(h http.Header, body []byte) (domain.Signature, error) {
	header := h.Get("X-Hub-Signature-256")
	if header == "" {
		header = h.Get("X-Signature-256")
	}
	if header == "" {
		return domain.Signature{}, fmt.Errorf("%w: hmac-sha256 needs the X-Hub-Signature-256 or X-Signature-256 header", ErrSignatureMissing)
	}
	sig, ok := ParseHexSignature(header)
	if !ok {
		return domain.Signature{}, fmt.Errorf("%w: want sha256=<64 hex digits>", ErrSignatureInvalid)
	}
	i := matchSecret(s.Secrets, body, [][]byte{sig})
	if i < 0 {
		return domain.Signature{}, fmt.Errorf("%w: the signature matches no secret of source %q", ErrSignatureInvalid, s.Name)
	}
	return domain.Signature{Scheme: string(SchemeHMACSHA256), Secret: i}, nil
}

// ParseHexSignature decodes "sha256=<hex>" into the 32-byte MAC.
func ParseHexSignature(header string) ([]byte, bool) {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return nil, false
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return nil, false
	}
	return sig, true
}

// matchSecret returns the index of the first secret whose HMAC-SHA256 of
// content equals one of sigs, comparing in constant time; -1 for none.
func matchSecret(secrets [][]byte, content []byte, sigs [][]byte) int {
	for i, secret := range secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write(content)
		sum := mac.Sum(nil)
		for _, sig := range sigs {
			if hmac.Equal(sum, sig) {
				return i
			}
		}
	}
	return -1
}

// SignStandardWebhooks returns the webhook-signature value for a delivery
// signed with secret (whsec_…): what a sender computes, for tests and docs.
func SignStandardWebhooks(secret, id string, timestamp int64, body []byte) (string, error) {
	key, err := decodeSecret(SchemeStandardWebhooks, secret)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// SignHMACSHA256 returns the X-Hub-Signature-256 value for body.
func SignHMACSHA256(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
