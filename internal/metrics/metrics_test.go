package metrics

import (
	"fmt"
	"net/http"
	"testing"
)

func TestSourceLabelsAreBounded(t *testing.T) {
	t.Parallel()
	configured := newSourceLabels([]string{"tallyfy"})
	for source, want := range map[string]string{"tallyfy": "tallyfy", "github": OtherSource, "Bad Name": OtherSource, "": OtherSource} {
		if got := configured.label(source); got != want {
			t.Errorf("configured: label(%q) = %q, want %q", source, got, want)
		}
	}

	open := newSourceLabels(nil)
	for i := range MaxSourceLabels {
		if s := fmt.Sprintf("s%d", i); open.label(s) != s {
			t.Fatalf("source %s folded before the cap", s)
		}
	}
	for source, want := range map[string]string{"s0": "s0", "one-too-many": OtherSource, "_other": OtherSource, "UPPER": OtherSource} {
		if got := open.label(source); got != want {
			t.Errorf("past the cap: label(%q) = %q, want %q", source, got, want)
		}
	}
}

func TestWebhookOutcomeByStatus(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]string{
		http.StatusAccepted: OutcomeAccepted, http.StatusOK: OutcomeDuplicate,
		http.StatusBadRequest: OutcomeRejected, http.StatusUnauthorized: OutcomeRejected, http.StatusNotFound: OutcomeRejected,
		http.StatusRequestEntityTooLarge: OutcomeRejected, http.StatusUnprocessableEntity: OutcomeRejected,
		http.StatusRequestHeaderFieldsTooLarge: OutcomeRejected,
		http.StatusTooManyRequests:             OutcomeUnavailable, http.StatusServiceUnavailable: OutcomeUnavailable,
		http.StatusInternalServerError: OutcomeUnavailable,
	} {
		if got := webhookOutcome(status); got != want {
			t.Errorf("status %d: %s, want %s", status, got, want)
		}
	}
}
