package integration_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/taskledger/taskledger/internal/config"
)

// eventView and timelinePage are the timeline's answers decoded by the
// contract's field names.
type eventView struct {
	StreamSeq  uint64              `json:"stream_seq"`
	TaskID     string              `json:"task_id"`
	Event      string              `json:"event"`
	Source     string              `json:"source"`
	DedupKey   string              `json:"dedup_key"`
	EventID    string              `json:"event_id"`
	ExternalID string              `json:"external_id"`
	ReceivedAt *time.Time          `json:"received_at"`
	Signature  any                 `json:"signature"`
	Headers    map[string][]string `json:"headers"`
	Body       string              `json:"body"`
}

type timelinePage struct {
	TaskID     string      `json:"task_id"`
	Events     []eventView `json:"events"`
	NextCursor string      `json:"next_cursor"`
}

// timeline reads every page of task's timeline, limit events a page.
func (b *bundle) timeline(t *testing.T, task string, limit int) []eventView {
	t.Helper()
	var events []eventView
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("the timeline of %s does not end", task)
		}
		var page timelinePage
		getJSON(t, b.url+"/v1/tasks/"+url.PathEscape(task)+"/events?limit="+strconv.Itoa(limit)+"&cursor="+url.QueryEscape(cursor), &page)
		if page.TaskID != task || len(page.Events) > limit || (page.NextCursor != "" && len(page.Events) != limit) {
			t.Fatalf("page %d of %s: %+v", pages, task, page)
		}
		events = append(events, page.Events...)
		if cursor = page.NextCursor; cursor == "" {
			return events
		}
	}
}

func seqsOf(events []eventView) []uint64 {
	var out []uint64
	for _, e := range events {
		out = append(out, e.StreamSeq)
	}
	return out
}

func TestTimelineShowsEveryStoredEventOnceWithItsRawBody(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, nil)
	// Whitespace and an unknown field: the body comes back byte for byte.
	done := "{\n  \"event\": \"task.completed\", \"task_id\": \"audit\", \"process_id\": \"p\",\n" +
		"  \"completed_at\": \"2024-01-15T10:30:00Z\", \"event_id\": \"evt-1\", \"external_id\": \"prov-9\", \"extra\": [1, 2]\n}"
	first := b.post(t, "tallyfy", done, "User-Agent", "sender/1.0")
	if first.Status != http.StatusAccepted {
		t.Fatalf("post: %+v", first)
	}
	if r := b.post(t, "tallyfy", done); r.Status != http.StatusOK || r.StreamSeq != first.StreamSeq {
		t.Fatalf("re-send: %+v, want a duplicate of seq %d", r, first.StreamSeq)
	}
	assigned := b.accept(t, `{"event":"task.assigned","task_id":"audit","assignee":"ann"}`)
	b.accept(t, completion("someone-else", "2024-01-15T10:30:00Z"))
	b.publishRaw(t, "tallyfy", []byte("not json")) // no task: in no timeline
	reopened := b.accept(t, reopen("audit", "2024-01-16T09:00:00Z"))
	again := b.accept(t, completion("audit", "2024-01-17T09:00:00Z"))
	b.waitApplied(t, b.lastSeq(t))

	for _, limit := range []int{1, 2, 50} {
		events := b.timeline(t, "audit", limit)
		if got, want := seqsOf(events), []uint64{first.StreamSeq, assigned, reopened, again}; !slices.Equal(got, want) {
			t.Fatalf("limit %d: timeline seqs %v, want %v", limit, got, want)
		}
	}
	events := b.timeline(t, "audit", 50)
	e := events[0]
	if e.Event != "task.completed" || e.Source != "tallyfy" || e.DedupKey != first.DedupKey || e.EventID != "evt-1" ||
		e.ExternalID != "prov-9" || e.TaskID != "audit" || e.Body != done || !reflect.DeepEqual(e.Signature, map[string]any{"scheme": "none"}) ||
		e.ReceivedAt == nil || time.Since(*e.ReceivedAt) > time.Hour {
		t.Errorf("first event %+v", e)
	}
	if ua := e.Headers["Taskledger-Request-User-Agent"]; !slices.Equal(ua, []string{"sender/1.0"}) {
		t.Errorf("stored headers %v, want the sender's User-Agent among them", e.Headers)
	}
	if types := []string{events[1].Event, events[2].Event, events[3].Event}; !slices.Equal(types, []string{"task.assigned", "task.reopened", "task.completed"}) {
		t.Errorf("event types %v", types)
	}

	t.Run("search", func(t *testing.T) {
		t.Parallel()
		for _, query := range []string{"dedup_key=" + url.QueryEscape(first.DedupKey), "event_id=evt-1", "external_id=prov-9"} {
			var found struct {
				Events []eventView `json:"events"`
			}
			getJSON(t, b.url+"/v1/events?"+query, &found)
			if len(found.Events) != 1 || found.Events[0].StreamSeq != first.StreamSeq || found.Events[0].Body != done {
				t.Errorf("search %s: %+v, want the event at seq %d", query, found.Events, first.StreamSeq)
			}
		}
		var none struct {
			Events []eventView `json:"events"`
		}
		getJSON(t, b.url+"/v1/events?external_id=unknown", &none)
		if none.Events == nil || len(none.Events) != 0 {
			t.Errorf("search without a match: %+v, want an empty list", none.Events)
		}
	})

	t.Run("past the end", func(t *testing.T) {
		t.Parallel()
		// A cursor past the end is an empty last page, not a 404.
		past := base64.RawURLEncoding.EncodeToString([]byte("999999"))
		var page timelinePage
		getJSON(t, b.url+"/v1/tasks/audit/events?cursor="+past, &page)
		if len(page.Events) != 0 || page.NextCursor != "" {
			t.Errorf("page past the end: %+v", page)
		}
	})
}

func TestTimelineShowsAReSendAfterTheWindowOnce(t *testing.T) {
	t.Parallel()
	const window = time.Second
	b := setupRunning(t, func(c *config.Config) { c.DuplicateWindow = window })
	body := completion("resent-timeline", "2024-01-15T10:30:00Z")
	r := b.post(t, "tallyfy", body)
	if r.Status != http.StatusAccepted {
		t.Fatalf("original: %+v", r)
	}
	first := r.StreamSeq
	// Stored again after the window, as ingest does when the durable tier
	// cannot answer.
	afterTheWindow(window)
	b.resend(t, r.DedupKey, body)
	b.waitApplied(t, b.lastSeq(t))
	if got := seqsOf(b.timeline(t, "resent-timeline", 50)); !slices.Equal(got, []uint64{first}) {
		t.Errorf("timeline %v, want the event once, at seq %d", got, first)
	}
}

func TestTimelineRebuildWhileEventsFlow(t *testing.T) {
	t.Parallel()
	b := setupRunning(t, func(c *config.Config) { c.AdminToken = adminToken })
	bodies, _ := shuffledCompletions("flow", 40, 10, 4)
	b.ingest(t, bodies[:200])
	b.waitCaughtUp(t)

	traffic := make(chan struct{})
	go func() {
		defer close(traffic)
		b.ingest(t, bodies[200:])
	}()
	if r := b.adminPost(t, "/v1/projections/timeline/rebuild", adminToken); r.Status != http.StatusAccepted {
		t.Fatalf("start the rebuild: %+v", r)
	}
	eventually(t, "the timeline rebuild to finish", func() bool { return b.projectionState(t, "timeline") == "live" })
	<-traffic
	b.waitCaughtUp(t)

	// Every event stored is in the timeline once, under its own sequence.
	last := b.lastSeq(t)
	var want []uint64
	for seq := uint64(1); seq <= last; seq++ {
		want = append(want, seq)
	}
	var got []uint64
	for i := range 40 {
		got = append(got, seqsOf(b.timeline(t, fmt.Sprintf("flow-%02d", i), 500))...)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("after the rebuild the timelines hold %d events, want each of the %d stored once", len(got), len(want))
	}
}

func TestTimelineShowsTheSignatureCheck(t *testing.T) {
	t.Parallel()
	b := setupSigned(t)
	b.svc.Start()
	body := completion("t-signed-timeline", "2024-01-15T10:30:00Z")
	signed := b.post(t, "tallyfy", body, standardHeaders(t, oldSecret, "msg_tl", time.Now(), body)...)
	unsigned := b.post(t, "probe", reopen("t-signed-timeline", "2024-01-16T10:30:00Z"))
	if signed.Status != http.StatusAccepted || unsigned.Status != http.StatusAccepted {
		t.Fatalf("posts: %+v %+v", signed, unsigned)
	}
	b.waitApplied(t, b.lastSeq(t))
	events := b.timeline(t, "t-signed-timeline", 50)
	want := []any{map[string]any{"scheme": "standard-webhooks", "secret": float64(1)}, map[string]any{"scheme": "none"}}
	if len(events) != 2 || !reflect.DeepEqual([]any{events[0].Signature, events[1].Signature}, want) {
		t.Errorf("timeline %+v, want signatures %v", events, want)
	}
}
