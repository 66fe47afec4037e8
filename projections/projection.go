// Package projections keeps each task's completion history in Postgres under
// the three policies, and each task's timeline of stored events. Each
// projection lives in a schema of its own: its checkpoint (the last applied
// stream sequence) and its read model; the timeline's also holds each
// task's state (its latest completion and reopen), which every policy's
// histories read. Applying is a handful of batched upserts that
// give the same result whatever the order or repetition of the events; the
// checkpoint is written in the same transaction.
//
// The package knows neither HTTP nor NATS: it is given decoded events.
package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskledger/taskledger/domain"
)

// Projection is one read model kept from the stream: a policy's completion
// histories, the timeline of events, or the key stage (EventKeys).
type Projection struct {
	Name   string        // also the name of its live schema
	Policy domain.Policy // empty for the timeline and the key stage
	// Keys marks the key stage, the durable dedup tier.
	Keys bool
	// KeyRetention is how long the key stage remembers a key, between
	// stream timestamps; 0 remembers forever. Set by whoever applies it.
	KeyRetention time.Duration
}

// All lists the completion projections, one per policy.
var All = []Projection{
	{Name: "completions_all", Policy: domain.PolicyAll},
	{Name: "completions_first", Policy: domain.PolicyFirst},
	{Name: "completions_latest", Policy: domain.PolicyLatest},
}

// Timeline keeps every stored event of each task: the audit trail.
var Timeline = Projection{Name: "timeline"}

// Every lists everything the consumers keep: the key stage, which the
// policies wait for, then All, then Timeline.
var Every = append(append([]Projection{EventKeys}, All...), Timeline)

// IsTimeline reports whether p is the timeline.
func (p Projection) IsTimeline() bool { return p.Name == Timeline.Name }

// PartitionsOf is how many partitions p is split into when the
// configuration asks for configured: the key stage is never split, since
// a key may come back on another task and so in another partition.
func (p Projection) PartitionsOf(configured int) int {
	if p.Keys {
		return 1
	}
	return max(configured, 1)
}

// WaitsForKeys reports whether p may apply an event only once the key
// stage has: the policies, which skip duplicates and set reused keys aside
// as the key stage found them, and the timeline, whose task states leave
// them out (its events it tells apart by their bodies itself).
func (p Projection) WaitsForKeys() bool { return !p.Keys }

// ByName finds a projection by name.
func ByName(name string) (Projection, bool) {
	for _, p := range Every {
		if p.Name == name {
			return p, true
		}
	}
	return Projection{}, false
}

// ForPolicy returns the projection that keeps policy p.
func ForPolicy(p domain.Policy) Projection {
	for _, proj := range All {
		if proj.Policy == p {
			return proj
		}
	}
	panic("projections: no projection for policy " + string(p))
}

// createSchema creates the projection's tables, empty, in schema.
func (p Projection) createSchema(ctx context.Context, db DB, schema string) error {
	var err error
	switch {
	case p.IsTimeline():
		_, err = db.Exec(ctx, "SELECT taskledger_create_timeline($1)", schema)
	case p.Keys:
		_, err = db.Exec(ctx, "SELECT taskledger_create_projection($1, 'keys')", schema)
	default:
		_, err = db.Exec(ctx, "SELECT taskledger_create_projection($1, $2)", schema, string(p.Policy))
	}
	if err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}

// DB is what the package needs of a pool, connection or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// table is the schema-qualified, quoted name of a table in schema.
func table(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }
