package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/taskledger/taskledger/domain"
)

// TimelineEvent is one stored event of a task, as the timeline keeps it.
type TimelineEvent struct {
	Seq        uint64
	TaskID     string
	Type       string
	Source     string
	DedupKey   string
	EventID    string    // the body's event_id, if any
	ExternalID string    // the body's external_id, if any
	ReceivedAt time.Time // zero when the message did not say
	Header     map[string][]string
	Body       []byte
}

// applyTimeline inserts the decoded entries' events, one statement per
// batch (two when the first meets a kept event, see insertExpectingNew),
// and folds those that repeat no earlier event (by the key stage's
// repeats) into the task states. An event whose dedup key and body are
// already kept (a re-send appended again after the duplicate window)
// changes nothing, so the timeline shows each event once, at its first
// stream sequence; it returns how many such re-sends it left out. Entries
// that do not decode belong to no task; the policy projections set them
// aside as dead letters.
//
// Appending (see ReplayEntries), it inserts the events without looking for
// those already kept, and counts no re-sends.
func applyTimeline(ctx context.Context, tx pgx.Tx, schema string, entries []Entry, repeats map[uint64]repeat, appending bool) (duplicates int, err error) {
	n := len(entries)
	seqs, taskIDs, types, sources := newColumn(int8Elements, n), newColumn(textElements, n), newColumn(textElements, n), newColumn(textElements, n)
	keys, digests, eventIDs, externalIDs := newColumn(textElements, n), newColumn(textElements, n), newColumn(textElements, n), newColumn(textElements, n)
	receivedAt, headers, bodies := newColumn(timeElements, n), newColumn(jsonElements, n), newColumn(byteaElements, n)
	folded := make([]domain.Recorded, 0, n)
	for _, e := range entries {
		if e.DecodeErr != nil {
			continue
		}
		if _, repeated := repeats[e.Message.Seq]; !repeated {
			folded = append(folded, e.Record)
		}
		ev := e.Record.Event
		header := []byte("{}")
		if e.Message.Header != nil {
			header, _ = json.Marshal(e.Message.Header) // strings always encode
		}
		seqs.int8(int64(e.Message.Seq))
		taskIDs.text(ev.TaskID)
		types.text(ev.Type)
		sources.text(ev.Source)
		keys.text(e.Record.DedupKey)
		digests.text(domain.BodyDigest(e.Message.Body))
		eventIDs.textOrNull(ev.EventID)
		externalIDs.textOrNull(ev.ExternalID)
		receivedAt.timeOrNull(e.ReceivedAt)
		headers.bytes(header)
		bodies.bytes(e.Message.Body)
	}
	if seqs.n == 0 {
		return 0, nil
	}
	insert := "INSERT INTO " + table(schema, "events") + `
		(stream_seq, task_id, event, source, dedup_key, body_digest, event_id, external_id, received_at, headers, body)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::timestamptz[], $10::json[], $11::bytea[])`
	columns := []*column{seqs, taskIDs, types, sources, keys, digests, eventIDs, externalIDs, receivedAt, headers, bodies}
	var tag pgconn.CommandTag
	if appending {
		tag, err = execColumns(ctx, tx, insert, columns...)
	} else {
		// A re-send appended again past the duplicate window is rare.
		tag, err = insertExpectingNew(ctx, tx, insert, " ON CONFLICT DO NOTHING", columns...)
	}
	if err != nil {
		return 0, fmt.Errorf("insert timeline events: %w", err)
	}
	return seqs.n - int(tag.RowsAffected()), upsertStates(ctx, tx, schema, domain.FoldStates(folded))
}

const timelineColumns = `stream_seq, task_id, event, source, dedup_key, event_id, external_id, received_at, headers, body`

func scanTimelineEvent(row pgx.CollectableRow) (TimelineEvent, error) {
	var e TimelineEvent
	var seq int64
	var eventID, externalID pgtype.Text
	var receivedAt pgtype.Timestamptz
	err := row.Scan(&seq, &e.TaskID, &e.Type, &e.Source, &e.DedupKey, &eventID, &externalID, &receivedAt, &e.Header, &e.Body)
	e.Seq, e.EventID, e.ExternalID = uint64(seq), eventID.String, externalID.String
	if receivedAt.Valid {
		e.ReceivedAt = receivedAt.Time.UTC()
	}
	return e, err
}

// TaskEvents reads a task's timeline in stream order: at most limit events
// after stream sequence after (0 starts at the beginning). more reports
// whether further events follow.
func TaskEvents(ctx context.Context, db DB, taskID string, after uint64, limit int) (events []TimelineEvent, more bool, err error) {
	rows, err := db.Query(ctx, "SELECT "+timelineColumns+" FROM "+table(Timeline.Name, "events")+
		" WHERE task_id = $1 AND stream_seq > $2 ORDER BY stream_seq LIMIT $3", taskID, int64(after), limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("read timeline of task %q: %w", taskID, err)
	}
	events, err = pgx.CollectRows(rows, scanTimelineEvent)
	if err != nil {
		return nil, false, fmt.Errorf("read timeline of task %q: %w", taskID, err)
	}
	if more = len(events) > limit; more {
		events = events[:limit]
	}
	return events, more, nil
}

// EventField names what FindEvents matches on.
type EventField string

// The fields an event can be found by.
const (
	ByDedupKey   EventField = "dedup_key"
	ByEventID    EventField = "event_id"
	ByExternalID EventField = "external_id"
)

// FindEvents returns the events, of any task, whose field equals value, in
// stream order, at most limit.
func FindEvents(ctx context.Context, db DB, field EventField, value string, limit int) ([]TimelineEvent, error) {
	switch field {
	case ByDedupKey, ByEventID, ByExternalID:
	default:
		return nil, fmt.Errorf("find events: cannot search by %q", field)
	}
	rows, err := db.Query(ctx, "SELECT "+timelineColumns+" FROM "+table(Timeline.Name, "events")+
		" WHERE "+pgx.Identifier{string(field)}.Sanitize()+" = $1 ORDER BY stream_seq LIMIT $2", value, limit)
	if err != nil {
		return nil, fmt.Errorf("find events by %s: %w", field, err)
	}
	events, err := pgx.CollectRows(rows, scanTimelineEvent)
	if err != nil {
		return nil, fmt.Errorf("find events by %s: %w", field, err)
	}
	return events, nil
}
