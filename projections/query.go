package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskledger/taskledger/domain"
)

// ErrNoCompletions is returned for a task that has never been completed.
var ErrNoCompletions = errors.New("task has no completion")

// History is a task's completions under one policy, ordered by
// completed_at, and what is known of its reopens.
type History struct {
	TaskID      string
	Policy      domain.Policy
	Completions []domain.Completion
	State       domain.TaskState
}

// History reads a task's history from the live tables. It returns
// ErrNoCompletions when the task has no completion.
func (p Projection) History(ctx context.Context, db DB, taskID string) (History, error) {
	hs, err := p.histories(ctx, db, []string{taskID})
	if err != nil {
		return History{}, err
	}
	if len(hs) == 0 {
		return History{}, fmt.Errorf("%w: %q", ErrNoCompletions, taskID)
	}
	return hs[0], nil
}

// ProcessHistories reads the histories of a process's tasks in task id
// order, at most limit tasks after the task id after (exclusive; "" starts
// at the beginning). more reports whether further tasks follow.
func (p Projection) ProcessHistories(ctx context.Context, db DB, processID, after string, limit int) (hs []History, more bool, err error) {
	rows, err := db.Query(ctx, "SELECT DISTINCT task_id FROM "+table(p.Name, "completions")+
		" WHERE process_id = $1 AND task_id > $2 ORDER BY task_id LIMIT $3", processID, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list tasks of process %q: %w", processID, err)
	}
	taskIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, false, fmt.Errorf("list tasks of process %q: %w", processID, err)
	}
	if more = len(taskIDs) > limit; more {
		taskIDs = taskIDs[:limit]
	}
	hs, err = p.histories(ctx, db, taskIDs)
	return hs, more, err
}

// histories reads the completions of taskIDs, in task id order, with their
// states as the timeline keeps them; tasks without completions are left
// out.
func (p Projection) histories(ctx context.Context, db DB, taskIDs []string) ([]History, error) {
	if len(taskIDs) == 0 {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT task_id, completed_at, stream_seq, process_id, completed_by, source, dedup_key
		FROM `+table(p.Name, "completions")+` WHERE task_id = ANY($1) ORDER BY task_id, completed_at, stream_seq`, taskIDs)
	if err != nil {
		return nil, fmt.Errorf("read completions: %w", err)
	}
	completions, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Completion, error) {
		var c domain.Completion
		var seq int64
		err := row.Scan(&c.TaskID, &c.CompletedAt, &seq, &c.ProcessID, &c.CompletedBy, &c.Source, &c.DedupKey)
		c.Seq, c.CompletedAt = uint64(seq), c.CompletedAt.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read completions: %w", err)
	}
	states, err := readStates(ctx, db, taskIDs)
	if err != nil {
		return nil, err
	}
	var out []History
	for _, c := range completions {
		if len(out) == 0 || out[len(out)-1].TaskID != c.TaskID {
			out = append(out, History{TaskID: c.TaskID, Policy: p.Policy, State: states[c.TaskID]})
		}
		last := &out[len(out)-1]
		last.Completions = append(last.Completions, c)
	}
	return out, nil
}

// readStates reads the task states of taskIDs, which the timeline keeps
// for every policy.
func readStates(ctx context.Context, db DB, taskIDs []string) (map[string]domain.TaskState, error) {
	rows, err := db.Query(ctx, `SELECT task_id, last_completed_at, last_completed_seq, last_reopened_at, last_reopened_seq
		FROM `+table(Timeline.Name, "task_state")+` WHERE task_id = ANY($1)`, taskIDs)
	if err != nil {
		return nil, fmt.Errorf("read task states: %w", err)
	}
	defer rows.Close()
	states := make(map[string]domain.TaskState, len(taskIDs))
	for rows.Next() {
		var s domain.TaskState
		var completed, reopened position
		if err := rows.Scan(&s.TaskID, &completed.at, &completed.seq, &reopened.at, &reopened.seq); err != nil {
			return nil, fmt.Errorf("read task states: %w", err)
		}
		s.LastCompleted, s.LastReopened = completed.position(), reopened.position()
		states[s.TaskID] = s
	}
	return states, rows.Err()
}

// position scans a nullable (time, seq) pair.
type position struct {
	at  *time.Time
	seq *int64
}

func (p position) position() domain.Position {
	if p.at == nil || p.seq == nil {
		return domain.Position{}
	}
	return domain.Position{At: p.at.UTC(), Seq: uint64(*p.seq)}
}
