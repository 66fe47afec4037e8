package api

import (
	"net/http"
	"time"

	"github.com/taskledger/taskledger/internal/httpjson"
)

// OutcomeHistory tells how many webhook deliveries had each outcome over a
// recent window, and the span that covers (shorter while the service is
// young).
type OutcomeHistory interface {
	Since(window time.Duration, now time.Time) (map[string]uint64, time.Duration)
}

// IngestWindow is the deliveries of one recent window, by outcome.
type IngestWindow struct {
	WindowSeconds  int     `json:"window_seconds"`
	CoveredSeconds float64 `json:"covered_seconds"`
	Accepted       uint64  `json:"accepted"`
	Duplicate      uint64  `json:"duplicate"`
	Rejected       uint64  `json:"rejected"`
	Unavailable    uint64  `json:"unavailable"`
}

// ingestWindows are the windows GET /v1/ingest/summary reports.
var ingestWindows = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}

// IngestSummary serves GET /v1/ingest/summary: the webhook deliveries
// answered in the last 1, 5 and 15 minutes by outcome, from the counters
// behind taskledger_webhooks_total.
func IngestSummary(history OutcomeHistory) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		windows := make([]IngestWindow, 0, len(ingestWindows))
		for _, d := range ingestWindows {
			counts, covered := history.Since(d, now)
			windows = append(windows, IngestWindow{
				WindowSeconds: int(d.Seconds()), CoveredSeconds: covered.Round(time.Second).Seconds(),
				Accepted: counts["accepted"], Duplicate: counts["duplicate"],
				Rejected: counts["rejected"], Unavailable: counts["unavailable"],
			})
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"windows": windows})
	}
}
