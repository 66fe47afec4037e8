package consumers

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// helperSessions are projection sessions (see connectProjectionSession)
// that apply parts of a batch beside a main session, by index, each
// connected on first use and again after it closed.
type helperSessions struct {
	pool  *pgxpool.Pool
	name  func(i int) string // application_name of session i
	conns []*pgx.Conn
}

func newHelperSessions(pool *pgxpool.Pool, n int, name func(i int) string) helperSessions {
	return helperSessions{pool: pool, name: name, conns: make([]*pgx.Conn, n)}
}

// get returns session i.
func (h *helperSessions) get(ctx context.Context, i int) (*pgx.Conn, error) {
	if h.conns[i] == nil || h.conns[i].IsClosed() {
		conn, err := connectProjectionSession(ctx, h.pool, h.name(i))
		if err != nil {
			return nil, err
		}
		h.conns[i] = conn
	}
	return h.conns[i], nil
}

// close closes every session connected.
func (h *helperSessions) close(ctx context.Context) {
	for i, conn := range h.conns {
		if conn != nil {
			conn.Close(ctx)
			h.conns[i] = nil
		}
	}
}
