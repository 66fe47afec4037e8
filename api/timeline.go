package api

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/projections"
)

// SignatureView is how an event's signature was checked at ingest.
type SignatureView struct {
	Scheme string `json:"scheme"`           // standard-webhooks, hmac-sha256 or none
	Secret *int   `json:"secret,omitempty"` // index of the secret that verified it
}

// EventView is one stored event in the timeline and in search answers.
// Body is the raw body as received; when it is not valid UTF-8, Body has
// the invalid bytes replaced and BodyBase64 holds it exactly.
type EventView struct {
	StreamSeq  uint64              `json:"stream_seq"`
	TaskID     string              `json:"task_id"`
	Event      string              `json:"event"`
	Source     string              `json:"source"`
	DedupKey   string              `json:"dedup_key"`
	EventID    string              `json:"event_id,omitempty"`
	ExternalID string              `json:"external_id,omitempty"`
	ReceivedAt *time.Time          `json:"received_at"`
	Signature  *SignatureView      `json:"signature"` // null for events stored without a check
	Headers    map[string][]string `json:"headers"`
	Body       string              `json:"body"`
	BodyBase64 string              `json:"body_base64,omitempty"`
}

// ViewEvent renders e for the API.
func ViewEvent(e projections.TimelineEvent) EventView {
	v := EventView{StreamSeq: e.Seq, TaskID: e.TaskID, Event: e.Type, Source: e.Source, DedupKey: e.DedupKey,
		EventID: e.EventID, ExternalID: e.ExternalID, Headers: e.Header}
	if v.Headers == nil {
		v.Headers = map[string][]string{}
	}
	if !e.ReceivedAt.IsZero() {
		at := e.ReceivedAt
		v.ReceivedAt = &at
	}
	if scheme := e.Header[eventlog.HeaderSignatureScheme]; len(scheme) > 0 {
		v.Signature = &SignatureView{Scheme: scheme[0]}
		if secret := e.Header[eventlog.HeaderSignatureSecret]; len(secret) > 0 {
			if i, err := strconv.Atoi(secret[0]); err == nil {
				v.Signature.Secret = &i
			}
		}
	}
	v.Body = string(e.Body)
	if !utf8.Valid(e.Body) {
		v.Body = strings.ToValidUTF8(v.Body, "\uFFFD")
		v.BodyBase64 = base64.StdEncoding.EncodeToString(e.Body)
	}
	return v
}

// TimelineView is a page of a task's timeline.
type TimelineView struct {
	TaskID     string      `json:"task_id"`
	Events     []EventView `json:"events"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (a *API) taskEvents(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	c, ok := cursorParam(w, r)
	if !ok {
		return
	}
	var after uint64
	if c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			badParam(w, "cursor is not one this API returned")
			return
		}
		after = n
	}
	taskID := r.PathValue("task_id")
	if !textParam(w, "task_id", taskID) {
		return
	}
	events, more, err := projections.TaskEvents(r.Context(), a.DB, taskID, after, limit)
	if err != nil {
		a.internal(w, err)
		return
	}
	if len(events) == 0 && after == 0 {
		httpjson.Error(w, http.StatusNotFound, httpjson.CodeTaskNotFound, "no event of the task is stored")
		return
	}
	v := TimelineView{TaskID: taskID, Events: viewEvents(events)}
	if more {
		v.NextCursor = cursor(strconv.FormatUint(events[len(events)-1].Seq, 10))
	}
	httpjson.Write(w, http.StatusOK, v)
}

// searchFields are the query parameters GET /v1/events searches by.
var searchFields = []projections.EventField{projections.ByDedupKey, projections.ByEventID, projections.ByExternalID}

func (a *API) findEvents(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	var field projections.EventField
	var value string
	for _, f := range searchFields {
		if !r.URL.Query().Has(string(f)) {
			continue
		}
		if field != "" {
			badParam(w, "give only one of dedup_key, event_id and external_id")
			return
		}
		field, value = f, r.URL.Query().Get(string(f))
	}
	if field == "" || value == "" {
		badParam(w, "give one of dedup_key, event_id or external_id, not empty")
		return
	}
	if !textParam(w, string(field), value) {
		return
	}
	events, err := projections.FindEvents(r.Context(), a.DB, field, value, limit)
	if err != nil {
		a.internal(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"events": viewEvents(events)})
}

// textParam answers 400 and returns false unless s is valid UTF-8 without
// NUL: no stored id is anything else, and Postgres text could not compare it.
func textParam(w http.ResponseWriter, name, s string) bool {
	if !domain.ValidText(s) {
		badParam(w, name+" must be valid UTF-8 without NUL characters")
		return false
	}
	return true
}

func viewEvents(events []projections.TimelineEvent) []EventView {
	views := make([]EventView, len(events))
	for i, e := range events {
		views[i] = ViewEvent(e)
	}
	return views
}
