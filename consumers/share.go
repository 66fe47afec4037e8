package consumers

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/projections"
)

// Share divides each projection's partitions fairly between the replicas
// running consumers: a replica works at most ceil(partitions / replicas)
// partitions of a projection, takes a free one while it has fewer, and
// hands one over when it has more (a replica joined). When a replica dies,
// its sessions and so its locks go with it, the count drops, and the others
// take its partitions on their next poll.
type Share struct {
	pool     *pgxpool.Pool
	poll     time.Duration
	log      zerolog.Logger
	replicas atomic.Int32 // last count, at least 1

	mu   sync.Mutex
	held map[string]int // partitions worked, by projection
}

// NewShare returns this replica's share, counted among the replicas once
// Run holds its presence lock.
func NewShare(pool *pgxpool.Pool, poll time.Duration, log zerolog.Logger) *Share {
	s := &Share{pool: pool, poll: poll, log: log, held: map[string]int{}}
	s.replicas.Store(1)
	return s
}

// Run holds this replica's presence lock on a session of its own and
// counts the replicas every poll until ctx ends, reconnecting with backoff
// after a failure (logged once; the consumers log the outage itself).
func (s *Share) Run(ctx context.Context) {
	var out outage
	for ctx.Err() == nil {
		err := s.present(ctx, &out)
		if ctx.Err() != nil {
			return
		}
		if out.attempts == 0 {
			s.log.Warn().Err(err).Msg("cannot count the replicas sharing the partitions; retrying")
		}
		out.attempts++
		select {
		case <-ctx.Done():
		case <-time.After(out.backoff()):
		}
	}
}

func (s *Share) present(ctx context.Context, out *outage) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "taskledger-replica"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var id [4]byte
	_, _ = rand.Read(id[:])
	if err := projections.LockReplica(ctx, conn, int32(binary.BigEndian.Uint32(id[:]))); err != nil {
		return err
	}
	out.attempts = 0
	for {
		n, err := projections.CountReplicas(ctx, conn)
		if err != nil {
			return err
		}
		s.replicas.Store(max(n, 1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.poll):
		}
	}
}

// fair is how many of n partitions one replica should work.
func (s *Share) fair(n int) int {
	r := int(s.replicas.Load())
	return (n + r - 1) / r
}

// take records that this replica works one more of projection's n
// partitions, if that stays within its fair share; it reports whether it
// may.
func (s *Share) take(projection string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[projection] >= s.fair(n) {
		return false
	}
	s.held[projection]++
	return true
}

// release records that this replica stopped working one of projection's
// partitions.
func (s *Share) release(projection string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[projection]--
}

// handOver reports whether this replica works more of projection's n
// partitions than its fair share; if so it records one as released, and the
// caller must stop working it.
func (s *Share) handOver(projection string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[projection] <= s.fair(n) {
		return false
	}
	s.held[projection]--
	return true
}
