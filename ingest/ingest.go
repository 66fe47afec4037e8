// Package ingest is the webhook endpoint, POST /v1/webhooks/{source}: it
// validates a delivery, picks its dedup key and answers only once JetStream
// has stored the event.
package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/internal/metrics"
	"github.com/taskledger/taskledger/internal/sources"
)

// Appender stores events durably; eventlog.Appender is the implementation.
type Appender interface {
	Append(ctx context.Context, r eventlog.Record) (eventlog.Appended, error)
	Original(ctx context.Context, seq uint64) (eventlog.Original, error)
}

// Options configures a Handler; zero fields take the defaults shown.
type Options struct {
	Sources        *sources.Set     // accepted sources and how each is verified (any, unsigned)
	MaxBodyBytes   int64            // larger bodies get 413 (1 MiB)
	PublishTimeout time.Duration    // wait for the stream's ack before 503 (5s)
	Now            func() time.Time // the clock (time.Now)
	Metrics        *metrics.Metrics // nil records nothing
	// MaxInflightBytes bounds the bodies being handled at once: a request
	// whose body does not fit in what is left gets 429 with Retry-After.
	// At least MaxBodyBytes (64 MiB).
	MaxInflightBytes int64
	Keys             KeyMemory // the durable dedup tier; nil for none
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	if o.Sources == nil {
		o.Sources = sources.Open()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = 64 << 20
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Handler serves POST /v1/webhooks/{source}.
type Handler struct {
	appender Appender
	opts     Options
	log      zerolog.Logger
	inflight *semaphore.Weighted // body bytes being handled
	// delaySample picks the re-sends with derived keys whose delay is
	// observed.
	delaySample sampler
}

// New returns a webhook handler appending through a.
func New(a Appender, opts Options, log zerolog.Logger) *Handler {
	opts = opts.withDefaults()
	return &Handler{appender: a, opts: opts, log: log, inflight: semaphore.NewWeighted(opts.MaxInflightBytes)}
}

// forwardedHeaders are stored with each event for later inspection, with
// the source's id_header when it names one.
var forwardedHeaders = []string{"Content-Type", "User-Agent", "Idempotency-Key", "X-Idempotency-Key",
	"Webhook-Id", "Webhook-Timestamp", "X-Request-Id"}

// MaxStoredHeaderBytes bounds each stored request header's value (431
// over it). With at most eight stored headers, the stored headers stay far
// below JetStream's 64 KiB header limit, so only the body and headers
// together against the server's max_payload can refuse a message (413).
const MaxStoredHeaderBytes = 4096

// Response is the body of 202 and 200 answers.
type Response struct {
	Status    string `json:"status"`
	DedupKey  string `json:"dedup_key"`
	StreamSeq uint64 `json:"stream_seq"`
	Duplicate bool   `json:"duplicate"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src, ok := h.opts.Sources.Lookup(r.PathValue("source"))
	if !ok {
		httpjson.Error(w, http.StatusNotFound, httpjson.CodeUnknownSource, fmt.Sprintf("unknown source %q", r.PathValue("source")))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		httpjson.Error(w, http.StatusUnsupportedMediaType, httpjson.CodeUnsupportedMedia, "Content-Type must be application/json")
		return
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		httpjson.Error(w, http.StatusRequestEntityTooLarge, httpjson.CodeBodyTooLarge,
			fmt.Sprintf("body is larger than %d bytes", h.opts.MaxBodyBytes))
		return
	}
	// A body of unknown length is charged the largest it may be.
	charge := h.opts.MaxBodyBytes
	if r.ContentLength >= 0 {
		charge = r.ContentLength
	}
	if !h.inflight.TryAcquire(charge) {
		// Read the body to the end (discarding it, so it costs no memory)
		// before answering: a sender still writing it when the connection
		// closed would see a broken pipe instead of the 429.
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
		w.Header().Set("Retry-After", "1")
		httpjson.Error(w, http.StatusTooManyRequests, httpjson.CodeTooManyRequests,
			"too many request bytes in flight; retry later with the same request")
		return
	}
	defer h.inflight.Release(charge)
	body, err := readBody(w, r, charge, h.opts.MaxBodyBytes)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, httpjson.CodeBodyTooLarge,
				fmt.Sprintf("body is larger than %d bytes", h.opts.MaxBodyBytes))
			return
		}
		httpjson.Error(w, http.StatusBadRequest, httpjson.CodeInvalidJSON, "could not read body: "+err.Error())
		return
	}
	sig, err := src.Verify(r.Header, body, h.opts.Now())
	if err != nil {
		unauthorized(w, err)
		return
	}
	ev, err := domain.ParseEvent(src.Name, body)
	if err != nil {
		h.refuse(w, err)
		return
	}
	key, err := dedupKey(src, ev, r.Header)
	if err != nil {
		h.refuse(w, err)
		return
	}
	httpjson.AddLogField(r.Context(), "dedup_key", key.Value)
	stored, err := pick(r.Header, src.IDHeader)
	if err != nil {
		httpjson.Error(w, http.StatusRequestHeaderFieldsTooLarge, httpjson.CodeHeaderTooLarge, err.Error())
		return
	}

	if h.opts.Keys != nil {
		if o, ok := h.opts.Keys.Recall(r.Context(), key.Value); ok {
			h.repeat(w, key, body, o.Seq, o.Digest, o.StoredAt, metrics.TierDurable)
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.opts.PublishTimeout)
	defer cancel()
	appended, err := h.append(ctx, eventlog.Record{
		Source: src.Name, TaskID: ev.TaskID, Key: key, Body: body, ReceivedAt: h.opts.Now(), RequestHeaders: stored, Signature: sig,
	})
	if errors.Is(err, eventlog.ErrTooLarge) {
		httpjson.Error(w, http.StatusRequestEntityTooLarge, httpjson.CodeBodyTooLarge, err.Error())
		return
	}
	if err != nil {
		h.unavailable(w, err)
		return
	}
	if !appended.Duplicate {
		httpjson.Write(w, http.StatusAccepted, Response{Status: "accepted", DedupKey: key.Value, StreamSeq: appended.Seq})
		return
	}
	if !key.Explicit() {
		// A derived key stands for the event's content: the answer needs
		// nothing of the original, which only tells how late the re-send
		// is. Reading it back costs the stream a read of a message block,
		// so it is done aside, for a sample of these re-sends.
		h.repeat(w, key, body, appended.Seq, "", time.Time{}, metrics.TierJetStreamWindow)
		if now := h.opts.Now(); h.opts.Metrics != nil && h.delaySample.allow(now) {
			go h.observeDelay(appended.Seq, now)
		}
		return
	}
	// The original's body tells a retry from a reused sender-chosen key.
	original, err := h.appender.Original(ctx, appended.Seq)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	h.repeat(w, key, body, appended.Seq, original.BodyDigest, original.StoredAt, metrics.TierJetStreamWindow)
}

// delaySampleEvery is how often, at most, the original of a re-send with a
// derived key is read back to time the re-send.
const delaySampleEvery = 100 * time.Millisecond

// observeDelay reads back the original stored at seq and records how late
// its re-send, received at, came.
func (h *Handler) observeDelay(seq uint64, received time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.PublishTimeout)
	defer cancel()
	if original, err := h.appender.Original(ctx, seq); err == nil {
		h.opts.Metrics.ResendDelayed(metrics.TierJetStreamWindow, received.Sub(original.StoredAt))
	}
}

// sampler lets through at most one event per delaySampleEvery.
type sampler struct {
	next atomic.Int64 // Unix ns from which the next event is let through
}

// allow reports whether the event at now is let through.
func (s *sampler) allow(now time.Time) bool {
	next := s.next.Load()
	return now.UnixNano() >= next && s.next.CompareAndSwap(next, now.Add(delaySampleEvery).UnixNano())
}

// repeat answers a re-send of the event stored at seq with digest at
// storedAt, as tier found it: 200 duplicate with the original sequence, or
// 422 when a sender-chosen key comes back with another body.
func (h *Handler) repeat(w http.ResponseWriter, key domain.DedupKey, body []byte, seq uint64, digest string,
	storedAt time.Time, tier string) {
	if key.Explicit() && digest != domain.BodyDigest(body) {
		httpjson.Error(w, http.StatusUnprocessableEntity, httpjson.CodeKeyReused, fmt.Sprintf(
			"%s %q was already used for a different body (stream sequence %d)", key.Origin, key.Value, seq))
		return
	}
	h.opts.Metrics.Deduplicated(tier, storedAt, h.opts.Now())
	httpjson.Write(w, http.StatusOK, Response{Status: "duplicate", DedupKey: key.Value, StreamSeq: seq, Duplicate: true})
}

// readBody reads the body, at most limit bytes, into a buffer of size
// bytes allocated once.
func readBody(w http.ResponseWriter, r *http.Request, size, limit int64) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	return buf.Bytes(), err
}

// dedupKey picks the delivery's key, first found: Idempotency-Key, the
// source's own delivery id (id_header or id_field), webhook-id, event_id,
// derived.
func dedupKey(src sources.Source, ev domain.Event, h http.Header) (domain.DedupKey, error) {
	kh := domain.KeyHeaders{IdempotencyKey: h.Get("Idempotency-Key"), WebhookID: h.Get("Webhook-Id")}
	if kh.IdempotencyKey == "" {
		kh.IdempotencyKey = h.Get("X-Idempotency-Key")
	}
	switch {
	case src.IDHeader != "":
		kh.DeliveryID = h.Get(src.IDHeader)
	case src.IDField != "":
		id, err := domain.BodyField(ev.Raw, src.IDField)
		if err != nil {
			return domain.DedupKey{}, err
		}
		kh.DeliveryID = id
	}
	return domain.DeriveDedupKey(ev, kh)
}

// append stores rec, timing JetStream's answer.
func (h *Handler) append(ctx context.Context, rec eventlog.Record) (eventlog.Appended, error) {
	start := time.Now()
	stored, err := h.appender.Append(ctx, rec)
	outcome := metrics.PublishStored
	switch {
	case err != nil:
		outcome = metrics.PublishFailed
	case stored.Duplicate:
		outcome = metrics.PublishDuplicate
	}
	h.opts.Metrics.Published(outcome, time.Since(start))
	return stored, err
}

func (h *Handler) refuse(w http.ResponseWriter, err error) {
	var ve *domain.ValidationError
	if errors.As(err, &ve) {
		httpjson.Error(w, http.StatusUnprocessableEntity, ve.Code, ve.Error())
		return
	}
	httpjson.Error(w, http.StatusBadRequest, httpjson.CodeInvalidJSON, err.Error())
}

// unavailable answers 503: the sender should retry, and a retry is safe
// because it carries the same dedup key.
func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.log.Warn().Err(err).Msg("event stream did not acknowledge; answering 503")
	w.Header().Set("Retry-After", strconv.Itoa(1))
	httpjson.Error(w, http.StatusServiceUnavailable, httpjson.CodeStreamUnavailable,
		"the event could not be stored now; retry later with the same request")
}

// pick returns the request headers stored with the event: the forwarded
// ones and extra, when named. A value over MaxStoredHeaderBytes is an error.
func pick(h http.Header, extra string) (map[string]string, error) {
	out := make(map[string]string)
	for _, name := range append(slices.Clip(forwardedHeaders), extra) {
		v := h.Get(name)
		if v == "" {
			continue
		}
		if len(v) > MaxStoredHeaderBytes {
			return nil, fmt.Errorf("header %s is %d bytes; at most %d are stored", name, len(v), MaxStoredHeaderBytes)
		}
		out[name] = v
	}
	return out, nil
}
