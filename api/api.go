// Package api serves the query and operations endpoints: completion
// histories, projection status, dead letters.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/httpjson"
	"github.com/taskledger/taskledger/projections"
)

// StreamState is the event stream as the service reaches it.
type StreamState struct {
	Identity projections.StreamIdentity
	LastSeq  uint64
}

// Stream tells which stream the service reaches and where it is, to
// compute lag and tell a stream the projections do not follow.
type Stream interface {
	// StreamState is the stream's identity and last sequence.
	StreamState(ctx context.Context) (StreamState, error)
	// StoredAt is when the first event at or after seq was stored.
	StoredAt(ctx context.Context, seq uint64) (time.Time, error)
	// PartitionLastSeq is the sequence of partition's last event, 0 for none.
	PartitionLastSeq(ctx context.Context, partition int) (uint64, error)
}

// RebuildStarter starts a rebuild of proj in the background once its lock
// is taken, returning projections.ErrRebuildRunning if one is already
// running.
type RebuildStarter func(ctx context.Context, proj projections.Projection) error

// DeadLetterRetrier applies dead letter id again, reporting whether it
// applied and otherwise why not; projections.ErrNoDeadLetter when there is
// no such dead letter.
type DeadLetterRetrier func(ctx context.Context, id int64) (resolved bool, reason string, err error)

// Stalls reports, by projection name, why this process's consumers of it
// cannot apply; a projection they apply is not listed.
type Stalls func() map[string]string

// Options are what the API serves from. All but AdminToken and Stalls are
// required.
type Options struct {
	DB              projections.DB // the read models
	Stream          Stream
	StartRebuild    RebuildStarter
	RetryDeadLetter DeadLetterRetrier
	// Stalls, when set, tells projections stalled by their consumers'
	// failures.
	Stalls Stalls
	// AdminToken guards the admin endpoints; empty refuses them.
	AdminToken string
}

// API serves the query and operations endpoints: completion histories,
// timelines, projection status, rebuilds and dead letters.
type API struct {
	Options
	log zerolog.Logger
}

// New returns the API, or an error naming a missing option.
func New(o Options, log zerolog.Logger) (*API, error) {
	switch {
	case o.DB == nil:
		return nil, errors.New("api: Options.DB is required")
	case o.Stream == nil:
		return nil, errors.New("api: Options.Stream is required")
	case o.StartRebuild == nil:
		return nil, errors.New("api: Options.StartRebuild is required")
	case o.RetryDeadLetter == nil:
		return nil, errors.New("api: Options.RetryDeadLetter is required")
	}
	return &API{Options: o, log: log}, nil
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/tasks/{task_id}/completions", a.taskCompletions)
	mux.HandleFunc("GET /v1/processes/{process_id}/completions", a.processCompletions)
	mux.HandleFunc("GET /v1/tasks/{task_id}/events", a.taskEvents)
	mux.HandleFunc("GET /v1/events", a.findEvents)
	mux.HandleFunc("GET /v1/projections", a.projectionStatus)
	mux.HandleFunc("POST /v1/projections/{name}/rebuild", a.admin(a.rebuild))
	mux.HandleFunc("GET /v1/dead-letters", a.admin(a.deadLetters))
	mux.HandleFunc("POST /v1/dead-letters/{id}/retry", a.admin(a.retryDeadLetter))
	mux.HandleFunc("GET /openapi.json", serveOpenAPI)
}

func (a *API) taskCompletions(w http.ResponseWriter, r *http.Request) {
	policy, ok := policyParam(w, r)
	if !ok {
		return
	}
	taskID := r.PathValue("task_id")
	if !textParam(w, "task_id", taskID) {
		return
	}
	h, err := projections.ForPolicy(policy).History(r.Context(), a.DB, taskID)
	if errors.Is(err, projections.ErrNoCompletions) {
		httpjson.Error(w, http.StatusNotFound, httpjson.CodeTaskNotFound, "the task has no completion")
		return
	}
	if err != nil {
		a.internal(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, ViewHistory(h))
}

// ProcessView is a page of a process's task histories.
type ProcessView struct {
	ProcessID  string        `json:"process_id"`
	Policy     domain.Policy `json:"policy"`
	Tasks      []HistoryView `json:"tasks"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

const defaultLimit, maxLimit = 50, 500

func (a *API) processCompletions(w http.ResponseWriter, r *http.Request) {
	policy, ok := policyParam(w, r)
	if !ok {
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	after, ok := cursorParam(w, r)
	if !ok {
		return
	}
	processID := r.PathValue("process_id")
	if !textParam(w, "process_id", processID) {
		return
	}
	hs, more, err := projections.ForPolicy(policy).ProcessHistories(r.Context(), a.DB, processID, after, limit)
	if err != nil {
		a.internal(w, err)
		return
	}
	v := ProcessView{ProcessID: processID, Policy: policy, Tasks: []HistoryView{}}
	for _, h := range hs {
		v.Tasks = append(v.Tasks, ViewHistory(h))
	}
	if more {
		v.NextCursor = cursor(hs[len(hs)-1].TaskID)
	}
	httpjson.Write(w, http.StatusOK, v)
}

// ProjectionView is a projection's position against the stream.
type ProjectionView struct {
	Name          string        `json:"name"`
	Policy        domain.Policy `json:"policy,omitempty"` // none for the timeline
	Checkpoint    uint64        `json:"checkpoint"`
	StreamLastSeq uint64        `json:"stream_last_seq"`
	Lag           *uint64       `json:"lag"`              // null when the checkpoint is not a position in this stream
	LagSeconds    float64       `json:"lag_seconds"`      // age of the oldest unapplied event
	DeadLetters   int           `json:"dead_letters"`     // unresolved
	State         string        `json:"state"`            // live, rebuilding or stalled
	Reason        string        `json:"reason,omitempty"` // why it is stalled
	// OffStream marks a projection stalled because its checkpoints are not
	// positions in this stream (another stream, or ahead of this one):
	// what /readyz refuses. A projection stalled by failures is not.
	OffStream bool `json:"-"`
	// FurthestCheckpoint is the highest of its partitions' checkpoints.
	FurthestCheckpoint uint64 `json:"-"`
	// Rebuild is the latest rebuild, if there was one.
	Rebuild *RebuildView `json:"rebuild,omitempty"`
	// Partitions are the projection's partitions (one when unpartitioned);
	// Checkpoint is the lowest of theirs.
	Partitions []PartitionView `json:"partitions"`
}

// PartitionView is one partition of a projection: its checkpoint, the
// sequence of its last event in the stream (the stream's last sequence
// when the projection has one partition), the lag between the two (in
// stream sequences; null, as the projection's, when a checkpoint is ahead
// of the stream or counts in another), and whether a worker holds its lock.
type PartitionView struct {
	Partition  int       `json:"partition"`
	Checkpoint uint64    `json:"checkpoint"`
	LastSeq    uint64    `json:"last_seq"`
	Lag        *uint64   `json:"lag"`
	Active     bool      `json:"active"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// partitions reads the positions of p's partitions, whose checkpoints cps
// were read before the stream's last sequence streamLast; off the stream
// (see ProjectionView.OffStream), their lags are unknown.
func (a *API) partitions(ctx context.Context, p projections.Projection, cps []projections.PartitionCheckpoint,
	streamLast uint64, offStream bool) ([]PartitionView, error) {
	views := make([]PartitionView, len(cps))
	for i, c := range cps {
		last := streamLast // the one partition holds every event
		if len(cps) > 1 {
			var err error
			if last, err = a.Stream.PartitionLastSeq(ctx, c.Partition); err != nil {
				return nil, fmt.Errorf("%w: %w", errStreamPosition, err)
			}
		}
		worker := projections.Worker(p.Name, c.Partition, len(cps))
		active, err := projections.ConsumerLockHeld(ctx, a.DB, worker)
		if err != nil {
			return nil, err
		}
		views[i] = PartitionView{Partition: c.Partition, Checkpoint: c.LastSeq, LastSeq: last, Active: active, UpdatedAt: c.UpdatedAt}
		if !offStream {
			// An idle partition's checkpoint moves past its own last
			// event, up to the stream's end: no lag.
			lag := projections.Behind(c.LastSeq, last)
			views[i].Lag = &lag
		}
	}
	return views, nil
}

// RebuildView is the latest rebuild's outcome (running, finished, failed,
// or interrupted when its process died) and progress: applied of target
// stream sequences into the shadow tables.
type RebuildView struct {
	Outcome    string     `json:"outcome"`
	Error      string     `json:"error,omitempty"`
	AppliedSeq uint64     `json:"applied_seq"`
	TargetSeq  uint64     `json:"target_seq"`
	Percent    float64    `json:"percent"`
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	FailedAt   *time.Time `json:"failed_at,omitempty"`
}

func viewRebuild(rb projections.RebuildStatus) *RebuildView {
	v := &RebuildView{Outcome: "interrupted", Error: rb.Error, AppliedSeq: rb.AppliedSeq, TargetSeq: rb.TargetSeq,
		StartedAt: rb.StartedAt, UpdatedAt: rb.UpdatedAt, FinishedAt: rb.FinishedAt, FailedAt: rb.FailedAt, Percent: 100}
	switch {
	case rb.Running:
		v.Outcome = "running"
	case rb.FinishedAt != nil:
		v.Outcome = "finished"
	case rb.FailedAt != nil:
		v.Outcome = "failed"
	}
	if rb.TargetSeq > 0 {
		v.Percent = math.Round(1000*float64(min(rb.AppliedSeq, rb.TargetSeq))/float64(rb.TargetSeq)) / 10
	}
	return v
}

// errStreamPosition marks a failure to read the stream's position.
var errStreamPosition = errors.New("cannot read the stream's position")

func (a *API) projectionStatus(w http.ResponseWriter, r *http.Request) {
	views, err := a.Projections(r.Context())
	if errors.Is(err, errStreamPosition) {
		httpjson.Error(w, http.StatusServiceUnavailable, httpjson.CodeStreamUnavailable, err.Error())
		return
	}
	if err != nil {
		a.internal(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"projections": views})
}

// Projections reports every projection's position, as GET /v1/projections
// answers it; the metrics and /readyz read the same.
func (a *API) Projections(ctx context.Context) ([]ProjectionView, error) {
	// Checkpoints first, the stream's position after: while events flow, a
	// checkpoint read first is never ahead of the last sequence.
	checkpoints := make([][]projections.PartitionCheckpoint, len(projections.Every))
	for i, p := range projections.Every {
		cps, err := projections.Partitions(ctx, a.DB, p.Name)
		if err != nil {
			return nil, err
		}
		checkpoints[i] = cps
	}
	stream, err := a.Stream.StreamState(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStreamPosition, err)
	}
	rebuilds, err := projections.Rebuilds(ctx, a.DB)
	if err != nil {
		return nil, err
	}
	recorded, _, err := projections.RecordedStream(ctx, a.DB)
	if err != nil {
		return nil, err
	}
	dead, err := projections.UnresolvedDeadLetters(ctx, a.DB)
	if err != nil {
		return nil, err
	}
	var stalls map[string]string
	if a.Stalls != nil {
		stalls = a.Stalls()
	}
	views := []ProjectionView{}
	for i, p := range projections.Every {
		var lowest, furthest uint64
		for j, c := range checkpoints[i] {
			if j == 0 || c.LastSeq < lowest {
				lowest = c.LastSeq
			}
			furthest = max(furthest, c.LastSeq)
		}
		v := ProjectionView{Name: p.Name, Policy: p.Policy, Checkpoint: lowest, FurthestCheckpoint: furthest,
			StreamLastSeq: stream.LastSeq, DeadLetters: dead[p.Name], State: "live"}
		if mismatch := projections.CheckStream(recorded, stream.Identity, stream.LastSeq, furthest); mismatch != nil {
			v.State, v.Reason, v.OffStream = "stalled", mismatch.Error(), true
		} else {
			lag := projections.Behind(lowest, stream.LastSeq)
			v.Lag = &lag
			if lag > 0 {
				oldest, err := a.Stream.StoredAt(ctx, lowest+1)
				if err != nil {
					return nil, fmt.Errorf("%w: %w", errStreamPosition, err)
				}
				v.LagSeconds = max(time.Since(oldest).Seconds(), 0)
			}
			if reason, ok := stalls[p.Name]; ok {
				v.State, v.Reason = "stalled", reason
			}
		}
		if v.Partitions, err = a.partitions(ctx, p, checkpoints[i], stream.LastSeq, v.OffStream); err != nil {
			return nil, err
		}
		if rb, ok := rebuilds[p.Name]; ok {
			v.Rebuild = viewRebuild(rb)
			if rb.Running {
				v.State = "rebuilding"
			}
		}
		views = append(views, v)
	}
	return views, nil
}

func (a *API) rebuild(w http.ResponseWriter, r *http.Request) {
	proj, ok := projections.ByName(r.PathValue("name"))
	if !ok {
		httpjson.Error(w, http.StatusNotFound, httpjson.CodeProjectionNotFound, fmt.Sprintf("no projection %q", r.PathValue("name")))
		return
	}
	err := a.StartRebuild(r.Context(), proj)
	var mismatch *projections.StreamMismatchError
	switch {
	case errors.Is(err, projections.ErrRebuildRunning):
		httpjson.Error(w, http.StatusConflict, httpjson.CodeRebuildRunning, err.Error())
	case errors.As(err, &mismatch):
		httpjson.Error(w, http.StatusConflict, httpjson.CodeStreamMismatch, err.Error())
	case err != nil:
		a.internal(w, err)
	default:
		httpjson.Write(w, http.StatusAccepted, map[string]string{"projection": proj.Name, "state": "rebuilding"})
	}
}

func (a *API) deadLetters(w http.ResponseWriter, r *http.Request) {
	includeResolved := r.URL.Query().Get("include_resolved") == "true"
	letters, err := projections.DeadLetters(r.Context(), a.DB, includeResolved, 1000)
	if err != nil {
		a.internal(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, ViewDeadLetters(letters))
}

func (a *API) retryDeadLetter(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		badParam(w, "dead letter id must be a number")
		return
	}
	resolved, reason, err := a.RetryDeadLetter(r.Context(), id)
	switch {
	case errors.Is(err, projections.ErrNoDeadLetter):
		httpjson.Error(w, http.StatusNotFound, httpjson.CodeDeadLetterNotFound, err.Error())
	case err != nil:
		a.internal(w, err)
	case !resolved:
		httpjson.Error(w, http.StatusUnprocessableEntity, httpjson.CodeStillFailing, reason)
	default:
		httpjson.Write(w, http.StatusOK, map[string]any{"id": id, "resolved": true})
	}
}

// admin guards next with the bearer token; without a configured token the
// endpoint is refused outright.
func (a *API) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.AdminToken == "" {
			httpjson.Error(w, http.StatusForbidden, httpjson.CodeAdminDisabled, "admin endpoints are off: this server has no admin token configured")
			return
		}
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(token), []byte(a.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="taskledger"`)
			httpjson.Error(w, http.StatusUnauthorized, httpjson.CodeUnauthorized, "a valid Authorization: Bearer token is required")
			return
		}
		next(w, r)
	}
}

// limitParam reads the page size: 1 to maxLimit, defaultLimit if absent.
func limitParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultLimit, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		badParam(w, "limit must be a whole number from 1 to 500")
		return 0, false
	}
	return n, true
}

// cursorParam decodes the opaque cursor of a paginated query: the position
// after which the page starts, "" for the first page.
func cursorParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	after, err := base64.RawURLEncoding.DecodeString(r.URL.Query().Get("cursor"))
	if err != nil || !domain.ValidText(string(after)) {
		badParam(w, "cursor is not one this API returned")
		return "", false
	}
	return string(after), true
}

// cursor encodes a page's last position for cursorParam.
func cursor(position string) string { return base64.RawURLEncoding.EncodeToString([]byte(position)) }

func policyParam(w http.ResponseWriter, r *http.Request) (domain.Policy, bool) {
	p, err := domain.ParsePolicy(r.URL.Query().Get("policy"))
	if err != nil {
		badParam(w, err.Error())
		return "", false
	}
	return p, true
}

func badParam(w http.ResponseWriter, message string) {
	httpjson.Error(w, http.StatusBadRequest, httpjson.CodeInvalidParameter, message)
}

func (a *API) internal(w http.ResponseWriter, err error) {
	a.log.Error().Err(err).Msg("query failed")
	httpjson.Error(w, http.StatusInternalServerError, httpjson.CodeInternal, "the query failed; see the server log")
}
