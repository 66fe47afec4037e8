package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/taskledger/taskledger/internal/config"
	"github.com/taskledger/taskledger/internal/loadgen"
)

// The tasks whose histories the console test looks up: one completed
// again after a reopen, one whose last event is a reopen.
const (
	consoleTask         = "console-task"
	consoleReopenedTask = "console-reopened-task"
)

// consoleData fills b with what every view of the console shows: traffic
// with duplicates and reopens, one task with a full history, one reopened,
// a rejected request, a completion only completions_latest refuses
// (fixable) and an undecodable event (not fixable).
func consoleData(t *testing.T, b *bundle) {
	t.Helper()
	if _, err := b.svc.Pool().Exec(context.Background(), `ALTER TABLE completions_latest.completions
		ADD CONSTRAINT not_blocked CHECK (completed_by <> 'blocked@example.com')`); err != nil {
		t.Fatal(err)
	}
	b.svc.Start()
	b.ingest(t, loadgen.Generate(3000, 5).Bodies)
	b.accept(t, `{"event":"task.completed","task_id":"console-task","process_id":"p-console",`+
		`"completed_at":"2024-01-15T10:30:00Z","completed_by":"ann@example.com","event_id":"evt-console-1","external_id":"prov-console-1"}`)
	b.accept(t, reopen(consoleTask, "2024-01-16T09:00:00Z"))
	b.accept(t, completionOf(consoleTask, "p-console", "2024-01-17T11:00:00Z", "bob@example.com"))
	b.accept(t, completionOf(consoleReopenedTask, "p-console", "2024-01-15T12:00:00Z", "cy@example.com"))
	b.accept(t, reopen(consoleReopenedTask, "2024-01-18T08:00:00Z"))
	b.accept(t, completionOf("blocked-task", "p1", "2024-01-15T10:30:00Z", "blocked@example.com"))
	if r := b.post(t, "tallyfy", `{"event":"task.completed"}`); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("invalid event: %+v", r)
	}
	b.publishRaw(t, "tallyfy", []byte("not json"))
	b.waitCaughtUp(t)
}

// digits keeps the digits of a formatted number ("1,234" is 1234).
func digits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

// rowsText is the text of each cell of the rows selector matches.
func rowsText(t *testing.T, br *browser, rows string) [][]string {
	t.Helper()
	return eval[[][]string](t, br, `[...document.querySelectorAll(`+strconv.Quote(rows)+`)].map(r => [...r.cells].map(c => c.innerText.trim()))`)
}

func TestConsoleInARealBrowser(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AdminToken = adminToken })
	consoleData(t, b)
	br := newBrowser(t)

	t.Log("overview: projections and ingest, without signing in")
	br.do(t, "open the console", chromedp.Navigate(b.url+"/ui"))
	var status struct {
		Projections []struct {
			Name          string  `json:"name"`
			Policy        string  `json:"policy"`
			Checkpoint    uint64  `json:"checkpoint"`
			StreamLastSeq uint64  `json:"stream_last_seq"`
			Lag           uint64  `json:"lag"`
			LagSeconds    float64 `json:"lag_seconds"`
			DeadLetters   int     `json:"dead_letters"`
			State         string  `json:"state"`
		} `json:"projections"`
	}
	getJSON(t, b.url+"/v1/projections", &status)
	br.waitFor(t, "the projections table", fmt.Sprintf(`document.querySelectorAll('#projections tbody tr').length === %d`, len(status.Projections)))
	for i, row := range rowsText(t, br, "#projections tbody tr") {
		p := status.Projections[i]
		policy := p.Policy
		if policy == "" {
			policy = "—"
		}
		want := []string{p.Name, policy, fmt.Sprint(p.Checkpoint), fmt.Sprint(p.StreamLastSeq), fmt.Sprint(p.Lag), "0", p.State}
		got := []string{row[0], row[1], digits(row[2]), digits(row[3]), digits(row[4]), row[5], strings.Fields(row[6])[0]}
		if strings.Join(got, "|") != strings.Join(want, "|") || row[7] != "Rebuild" {
			t.Errorf("projection row %v, want %v and a rebuild button", row, want)
		}
		if dead := fmt.Sprintf("%d dead letter", p.DeadLetters); (p.DeadLetters > 0) != strings.Contains(row[6], dead) {
			t.Errorf("projection row %v, the API counts %d dead letters", row, p.DeadLetters)
		}
	}
	var ingest struct {
		Windows []map[string]float64 `json:"windows"`
	}
	getJSON(t, b.url+"/v1/ingest/summary", &ingest)
	br.waitFor(t, "the ingest cards", `document.querySelectorAll('#ingest .card').length === 4`)
	cards := eval[map[string]string](t, br, `Object.fromEntries([...document.querySelectorAll('#ingest .card')].map(c => [c.dataset.outcome, c.querySelector('.value').innerText]))`)
	for _, w := range ingest.Windows {
		if w["window_seconds"] != 300 {
			continue
		}
		for _, outcome := range []string{"accepted", "duplicate", "rejected", "unavailable"} {
			if digits(cards[outcome]) != fmt.Sprint(w[outcome]) {
				t.Errorf("ingest card %s shows %q, the API says %v", outcome, cards[outcome], w[outcome])
			}
		}
		if w["accepted"] < 3000*0.8 || w["duplicate"] == 0 || w["rejected"] != 1 {
			t.Errorf("ingest summary %v does not count the test's traffic", w)
		}
	}
	br.screenshot(t, "console-overview")

	t.Log("task lookup, without signing in")
	br.do(t, "look up a task", chromedp.Navigate(b.url+"/ui#task"),
		chromedp.SendKeys(chromedp.CSS("#task-id"), consoleTask), chromedp.Click(chromedp.CSS("#task-search button")))
	br.waitFor(t, "the task's history", `!document.getElementById('task-result').hidden`)
	checkTaskView(t, b, br, consoleTask, false, 3)
	br.screenshot(t, "console-task")

	br.do(t, "look up a reopened task", chromedp.SetValue(chromedp.CSS("#task-id"), consoleReopenedTask), chromedp.Click(chromedp.CSS("#task-search button")))
	br.waitFor(t, "the reopened task's history", `!document.getElementById('task-result').hidden &&
		document.querySelectorAll('#timeline > li').length === 2`)
	checkTaskView(t, b, br, consoleReopenedTask, true, 2)

	br.do(t, "look up an unknown task", chromedp.SetValue(chromedp.CSS("#task-id"), "no-such-task"), chromedp.Click(chromedp.CSS("#task-search button")))
	br.waitFor(t, "the unknown task's error", `document.getElementById('task-error').innerText.includes('No event is stored for task "no-such-task"')`)

	t.Log("rebuild: the token is asked for once, the progress reaches done")
	br.do(t, "open the overview", chromedp.Navigate(b.url+"/ui#overview"))
	const rebuildButton = `#projections tr[data-projection="completions_all"] td.rebuild button`
	br.waitFor(t, "the rebuild button", `document.querySelector('`+rebuildButton+`')`)
	br.do(t, "start a rebuild", chromedp.Click(chromedp.CSS(rebuildButton)))
	br.waitFor(t, "the token dialog", `document.getElementById('token-dialog').open`)
	br.do(t, "sign in", chromedp.SendKeys(chromedp.CSS("#token-input"), adminToken), chromedp.Click(chromedp.CSS("#token-save")))
	seen := map[string]bool{}
	br.waitFor(t, "the rebuild to reach done", `(() => {
		const cell = document.querySelector('#projections tr[data-projection="completions_all"] td.rebuild');
		return cell && cell.querySelector('.progress.done') !== null && cell.innerText.includes('done');
	})()`)
	for _, label := range eval[[]string](t, br, `[...document.querySelectorAll('.progress .label')].map(l => l.innerText)`) {
		seen[label] = true
	}
	var after struct {
		Projections []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Rebuild struct {
				Outcome string `json:"outcome"`
			} `json:"rebuild"`
		} `json:"projections"`
	}
	getJSON(t, b.url+"/v1/projections", &after)
	i := slices.IndexFunc(after.Projections, func(p struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Rebuild struct {
			Outcome string `json:"outcome"`
		} `json:"rebuild"`
	}) bool {
		return p.Name == "completions_all"
	})
	if i < 0 {
		t.Fatalf("completions_all not listed: %+v", after.Projections)
	}
	if p := after.Projections[i]; !seen["done"] || p.State != "live" || p.Rebuild.Outcome != "finished" {
		t.Errorf("after the rebuild: progress labels %v, the API says %+v", seen, p)
	}
	if stored := eval[string](t, br, `sessionStorage.getItem('taskledger.adminToken')`); stored != adminToken {
		t.Errorf("session storage holds %q, want the token", stored)
	}
	if href := eval[string](t, br, `location.href`); strings.Contains(href, adminToken) {
		t.Errorf("the token is in the URL: %s", href)
	}

	t.Log("a later rebuild, started elsewhere, fails: the page shows that, not its own done")
	if _, err := b.svc.Pool().Exec(context.Background(), `UPDATE projection_rebuilds SET started_at = now(), updated_at = now(),
		finished_at = NULL, failed_at = now(), error = 'disk full' WHERE projection = 'completions_all'`); err != nil {
		t.Fatal(err)
	}
	br.waitFor(t, "the failed rebuild", `(() => {
		const cell = document.querySelector('#projections tr[data-projection="completions_all"] td.rebuild');
		return cell.querySelector('.progress') === null && cell.querySelector('.last-rebuild.failed') !== null &&
			cell.innerText.includes('last rebuild failed') && cell.innerText.includes('disk full');
	})()`)

	t.Log("dead letters: list, detail, retry")
	checkDeadLetters(t, b, br)

	t.Log("find an event by its provider id")
	br.do(t, "search by external_id", chromedp.Navigate(b.url+"/ui#events"),
		chromedp.SetValue(chromedp.CSS("#event-field"), "external_id"),
		chromedp.SendKeys(chromedp.CSS("#event-value"), "prov-console-1"), chromedp.Click(chromedp.CSS("#event-search button")))
	br.waitFor(t, "the search result", `document.querySelectorAll('#event-results .event-card').length === 1`)
	var found struct {
		Events []eventView `json:"events"`
	}
	getJSON(t, b.url+"/v1/events?external_id=prov-console-1", &found)
	card := eval[string](t, br, `document.querySelector('#event-results .event-card').innerText`)
	if len(found.Events) != 1 || !strings.Contains(card, "seq "+fmt.Sprint(found.Events[0].StreamSeq)) ||
		!strings.Contains(card, found.Events[0].DedupKey) || !strings.Contains(card, "task "+consoleTask) {
		t.Errorf("search result %q, the API found %+v", card, found.Events)
	}
	br.do(t, "search for nothing", chromedp.SetValue(chromedp.CSS("#event-value"), "no-such-id"), chromedp.Click(chromedp.CSS("#event-search button")))
	br.waitFor(t, "the empty search", `document.getElementById('event-empty').innerText.includes('No stored event has external_id "no-such-id"')`)

	t.Log("a phone screen")
	br.do(t, "emulate a phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(b.url+"/ui#task/"+url.PathEscape(consoleTask)))
	br.waitFor(t, "the task on a phone", `!document.getElementById('task-result').hidden`)
	if w := eval[float64](t, br, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("the page is %v px wide on a 390 px screen", w)
	}
	br.screenshot(t, "console-phone")

	br.do(t, "sign out", chromedp.Click(chromedp.CSS("#sign-out")))
	if stored := eval[string](t, br, `sessionStorage.getItem('taskledger.adminToken') || ''`); stored != "" {
		t.Errorf("the token is still stored after signing out")
	}
}

// checkTaskView compares the view of task, which has events events and is
// reopened or not, with the API: each policy's completions, the reopened
// badge, and the timeline with raw bodies.
func checkTaskView(t *testing.T, b *bundle, br *browser, task string, reopened bool, events int) {
	t.Helper()
	for _, policy := range []string{"all", "first", "latest"} {
		var h historyView
		getJSON(t, b.url+"/v1/tasks/"+task+"/completions?policy="+policy, &h)
		items := eval[[]string](t, br, `[...document.querySelectorAll('.policy[data-policy="`+policy+`"] li')].map(li => li.innerText)`)
		if len(items) != len(h.Completions) {
			t.Fatalf("%s column %q, the API has %+v", policy, items, h.Completions)
		}
		for i, c := range h.Completions {
			if !strings.Contains(items[i], "seq "+fmt.Sprint(c.StreamSeq)) || !strings.Contains(items[i], c.CompletedBy) {
				t.Errorf("%s column item %q, want seq %d by %s", policy, items[i], c.StreamSeq, c.CompletedBy)
			}
		}
		if h.Reopened != reopened {
			t.Errorf("the API says %s is reopened: %v, want %v", task, h.Reopened, reopened)
		}
	}
	badge := eval[string](t, br, `document.getElementById('task-reopened').innerText`)
	if reopened && !(strings.HasPrefix(badge, "reopened at ") && strings.HasSuffix(badge, " after its latest completion")) ||
		!reopened && badge != "not reopened" {
		t.Errorf("reopened badge of %s %q, want it to say reopened: %v", task, badge, reopened)
	}
	stored := b.timeline(t, task, 50)
	shown := eval[[]map[string]string](t, br, `[...document.querySelectorAll('#timeline > li')].map(li => ({
		seq: li.dataset.seq, raw: li.querySelector('details.raw-body pre').textContent, text: li.innerText}))`)
	if len(shown) != len(stored) || len(stored) != events {
		t.Fatalf("timeline of %s shows %d events, the API has %d (want %d)", task, len(shown), len(stored), events)
	}
	for i, e := range stored {
		if shown[i]["seq"] != fmt.Sprint(e.StreamSeq) || shown[i]["raw"] != e.Body || !strings.Contains(shown[i]["text"], e.Event) {
			t.Errorf("timeline item %d %v, want seq %d %s with its raw body", i, shown[i], e.StreamSeq, e.Event)
		}
	}
}

// checkDeadLetters compares the dead-letter view with the API, shows one
// in detail, and retries the fixable one (resolved) and the undecodable one
// (still failing), each with its result shown in words.
func checkDeadLetters(t *testing.T, b *bundle, br *browser) {
	t.Helper()
	br.do(t, "open the dead letters", chromedp.Navigate(b.url+"/ui#dead-letters"))
	letters := b.deadLetters(t, false)
	br.waitFor(t, "the dead letters", fmt.Sprintf(`document.querySelectorAll('#dead-letters tbody tr').length === %d`, len(letters)))
	rows := rowsText(t, br, "#dead-letters tbody tr")
	var blocked, poison int64
	for i, d := range letters {
		if rows[i][0] != fmt.Sprint(d.ID) || rows[i][1] != d.Projection || rows[i][3] != d.Reason || rows[i][4] != fmt.Sprint(d.Attempts) {
			t.Errorf("dead letter row %v, the API has %+v", rows[i], d)
		}
		if d.Projection == "completions_latest" && strings.Contains(string(d.Body), "blocked@example.com") {
			blocked = d.ID
		}
		if d.Projection == "completions_all" && string(d.Body) == `"not json"` {
			poison = d.ID
		}
	}
	if blocked == 0 || poison == 0 {
		t.Fatalf("dead letters %+v lack the blocked completion or the undecodable event", letters)
	}
	row := func(id int64) chromedp.CSS { return chromedp.CSS(fmt.Sprintf(`#dead-letters tr[data-id="%d"]`, id)) }

	br.do(t, "open the blocked dead letter", chromedp.Click(row(blocked)))
	br.waitFor(t, "its detail", `!document.getElementById('dead-detail').hidden`)
	body := eval[string](t, br, `document.getElementById('dead-detail-body').textContent`)
	headers := eval[string](t, br, `document.getElementById('dead-detail-headers').textContent`)
	if !strings.Contains(body, "blocked@example.com") || !strings.Contains(headers, "Nats-Msg-Id: tallyfy:") {
		t.Errorf("detail body %q headers %q", body, headers)
	}
	if _, err := b.svc.Pool().Exec(context.Background(), "ALTER TABLE completions_latest.completions DROP CONSTRAINT not_blocked"); err != nil {
		t.Fatal(err)
	}
	br.do(t, "retry it", chromedp.Click(chromedp.CSS("#dead-retry")))
	br.waitFor(t, "the retry's result", `document.getElementById('dead-retry-result').innerText.includes('applied: it is resolved')`)
	if eval[bool](t, br, `document.getElementById('token-dialog').open`) {
		t.Error("the token was asked for again")
	}
	for _, d := range b.deadLetters(t, true) {
		if d.ID == blocked && d.ResolvedAt == nil {
			t.Errorf("dead letter %d not resolved by the console's retry", blocked)
		}
	}
	br.waitFor(t, "the resolved dead letter to leave the list", fmt.Sprintf(`document.querySelectorAll('#dead-letters tbody tr').length === %d`, len(letters)-1))

	br.do(t, "retry the undecodable one", chromedp.Click(row(poison)), chromedp.Click(chromedp.CSS("#dead-retry")))
	br.waitFor(t, "the failed retry's result", `document.getElementById('dead-retry-result').innerText.includes('still fails')`)
	br.screenshot(t, "console-dead-letters")
}
