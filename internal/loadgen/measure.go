package loadgen

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// CopyCeiling COPYs rows rows into a fresh table with the read model's
// columns, keys and indexes (LIKE completions_all.completions) and returns
// rows per second: the most Postgres can take in this shape.
func CopyCeiling(ctx context.Context, pool *pgxpool.Pool, rows int) (float64, error) {
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS copy_ceiling;
		CREATE TABLE copy_ceiling (LIKE completions_all.completions INCLUDING ALL)`); err != nil {
		return 0, fmt.Errorf("prepare COPY ceiling: %w", err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS copy_ceiling") //nolint:errcheck // best effort
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	copied, err := pool.CopyFrom(ctx, pgx.Identifier{"copy_ceiling"},
		[]string{"task_id", "completed_at", "stream_seq", "process_id", "completed_by", "source", "dedup_key"},
		pgx.CopyFromSlice(rows, func(i int) ([]any, error) {
			return []any{"task-" + strconv.Itoa(i%(rows/8+1)), at.Add(time.Duration(i) * time.Second), int64(i + 1),
				"process-1", "user@example.com", "bench", "bench:derived:" + strconv.Itoa(i)}, nil
		}))
	if err != nil || copied != int64(rows) {
		return 0, fmt.Errorf("COPY ceiling: %d of %d rows: %w", copied, rows, err)
	}
	return float64(rows) / time.Since(start).Seconds(), nil
}

// Latencies summarizes request durations.
type Latencies []time.Duration

// Percentile returns the p-th percentile (0 < p <= 100), or 0 when empty.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
