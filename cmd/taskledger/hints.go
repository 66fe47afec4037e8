package main

import (
	"errors"
	"fmt"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/internal/service"
)

// hints are what an operator can do about the errors the packages below
// report; settings are named here, where flags and variables are known.
var hints = []struct {
	err  error
	hint string
}{
	{postgres.ErrUnreachable, "start Postgres (`make run` starts one; with Docker: `docker compose up -d postgres`), " +
		"or point TASKLEDGER_DATABASE_URL (--database-url) at a running server"},
	{postgres.ErrAuth, "the server refused the role: check the user and password in TASKLEDGER_DATABASE_URL " +
		"(--database-url), or create the role (`createuser --createdb NAME` as the postgres user)"},
	{eventlog.ErrUnreachable, "set TASKLEDGER_NATS_URL (--nats-url) to a running server with JetStream, " +
		"or leave it empty for the embedded one"},
	{service.ErrDataDirInUse, "stop the other process, reach its embedded server with TASKLEDGER_NATS_URL=nats://" +
		"<its TASKLEDGER_EMBEDDED_NATS_ADDR, 127.0.0.1:4223 by default>, or set TASKLEDGER_DATA_DIR (--data-dir) to another directory"},
	{eventlog.ErrAddrInUse, "another process listens there (a second taskledger?): stop it, set " +
		"TASKLEDGER_EMBEDDED_NATS_ADDR (--embedded-nats-addr) to a free loopback address, or to empty for none"},
}

// withHint appends the hint for err, if there is one.
func withHint(err error) error {
	for _, h := range hints {
		if errors.Is(err, h.err) {
			return fmt.Errorf("%w\n  hint: %s", err, h.hint)
		}
	}
	return err
}
