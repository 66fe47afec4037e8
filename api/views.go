package api

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/projections"
)

// CompletionView is one completion in API answers.
type CompletionView struct {
	CompletedAt time.Time `json:"completed_at"`
	CompletedBy string    `json:"completed_by"`
	ProcessID   string    `json:"process_id"`
	Source      string    `json:"source"`
	DedupKey    string    `json:"dedup_key"`
	StreamSeq   uint64    `json:"stream_seq"`
}

// HistoryView is a task's completion history under one policy.
type HistoryView struct {
	TaskID      string           `json:"task_id"`
	Policy      domain.Policy    `json:"policy"`
	Reopened    bool             `json:"reopened"`
	ReopenedAt  *time.Time       `json:"reopened_at,omitempty"`
	Completions []CompletionView `json:"completions"`
}

// ViewHistory renders h for the API and the CLI.
func ViewHistory(h projections.History) HistoryView {
	v := HistoryView{TaskID: h.TaskID, Policy: h.Policy, Reopened: h.State.Reopened(), Completions: []CompletionView{}}
	if !h.State.LastReopened.IsZero() {
		at := h.State.LastReopened.At
		v.ReopenedAt = &at
	}
	for _, c := range h.Completions {
		v.Completions = append(v.Completions, CompletionView{
			CompletedAt: c.CompletedAt, CompletedBy: c.CompletedBy, ProcessID: c.ProcessID,
			Source: c.Source, DedupKey: c.DedupKey, StreamSeq: c.Seq,
		})
	}
	return v
}

// DeadLetterView is a dead letter in API answers. Body is the stored body:
// JSON when it is JSON, else a string.
type DeadLetterView struct {
	ID            int64               `json:"id"`
	Projection    string              `json:"projection"`
	StreamSeq     uint64              `json:"stream_seq"`
	Subject       string              `json:"subject"`
	Reason        string              `json:"reason"`
	Attempts      int                 `json:"attempts"`
	CreatedAt     time.Time           `json:"created_at"`
	LastAttemptAt time.Time           `json:"last_attempt_at"`
	ResolvedAt    *time.Time          `json:"resolved_at"`
	Headers       map[string][]string `json:"headers"`
	Body          json.RawMessage     `json:"body"`
}

// DeadLettersView is the answer of GET /v1/dead-letters.
type DeadLettersView struct {
	DeadLetters []DeadLetterView `json:"dead_letters"`
}

// ViewDeadLetters renders a list of dead letters for the API and the CLI.
func ViewDeadLetters(letters []projections.DeadLetter) DeadLettersView {
	v := DeadLettersView{DeadLetters: make([]DeadLetterView, 0, len(letters))}
	for _, d := range letters {
		v.DeadLetters = append(v.DeadLetters, ViewDeadLetter(d))
	}
	return v
}

// ViewDeadLetter renders d for the API and the CLI.
func ViewDeadLetter(d projections.DeadLetter) DeadLetterView {
	body := json.RawMessage(d.Message.Body)
	if !json.Valid(body) {
		text := string(d.Message.Body)
		if !utf8.ValidString(text) {
			text = string([]rune(text)) // replaces invalid bytes with U+FFFD
		}
		body, _ = json.Marshal(text)
	}
	return DeadLetterView{
		ID: d.ID, Projection: d.Projection, StreamSeq: d.Message.Seq, Subject: d.Message.Subject,
		Reason: d.Reason, Attempts: d.Attempts, CreatedAt: d.CreatedAt, LastAttemptAt: d.LastAttemptAt,
		ResolvedAt: d.ResolvedAt, Headers: d.Message.Header, Body: body,
	}
}
