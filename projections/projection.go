// Package projections keeps each task's completion history in Postgres under
// the three policies. Each projection lives in a schema of its own: its
// checkpoint (the last applied stream sequence), the dedup keys it has seen,
// its completions and per-task state. Applying is a handful of batched
// upserts that give the same result whatever the order or repetition of the
// events; the checkpoint is written in the same transaction.
//
// The package knows neither HTTP nor NATS: it is given decoded events.
package projections

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskledger/taskledger/domain"
)

// Projection is one policy's read model.
type Projection struct {
	Name   string // also the name of its live schema
	Policy domain.Policy
}

// All lists the projections taskledger maintains, one per policy.
var All = []Projection{
	{Name: "completions_all", Policy: domain.PolicyAll},
	{Name: "completions_first", Policy: domain.PolicyFirst},
	{Name: "completions_latest", Policy: domain.PolicyLatest},
}

// ByName finds a projection by name.
func ByName(name string) (Projection, bool) {
	for _, p := range All {
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

// DB is what the package needs of a pool, connection or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// table is the schema-qualified, quoted name of a table in schema.
func table(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }
