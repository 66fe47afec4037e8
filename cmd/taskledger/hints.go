package main

import (
	"errors"
	"fmt"

	"github.com/taskledger/taskledger/eventlog"
	"github.com/taskledger/taskledger/internal/postgres"
	"github.com/taskledger/taskledger/internal/service"
	"github.com/taskledger/taskledger/projections"
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
	{eventlog.ErrNoJetStream, "start nats-server with JetStream enabled (`nats-server -js`), or leave " +
		"TASKLEDGER_NATS_URL (--nats-url) empty for the embedded one"},
	{service.ErrDataDirInUse, "stop the other process, reach its embedded server with TASKLEDGER_NATS_URL=nats://" +
		"<its TASKLEDGER_EMBEDDED_NATS_ADDR, 127.0.0.1:4223 by default>, or set TASKLEDGER_DATA_DIR (--data-dir) to another directory"},
	{eventlog.ErrAddrInUse, "another process listens there (a second taskledger?): stop it, set " +
		"TASKLEDGER_EMBEDDED_NATS_ADDR (--embedded-nats-addr) to a free loopback address, or to empty for none"},
}

// adoptCommand rebuilds every projection from the stream configured and
// makes the database follow it.
const adoptCommand = "taskledger replay --adopt-stream"

// advice is the hint for err, from the facts it carries: the settings and
// commands that take the ways out the packages name.
func advice(err error) (string, bool) {
	var mismatch *projections.StreamMismatchError
	var stream *eventlog.PartitionsChangedError
	var kept *projections.PartitionsChangedError
	switch {
	case errors.As(err, &mismatch):
		return "taskledger reaches the stream named by TASKLEDGER_STREAM (--stream) on TASKLEDGER_NATS_URL " +
			"(--nats-url), or, when that is empty, in TASKLEDGER_DATA_DIR (--data-dir): set them to where the stream " +
			"the database follows is, and start again; if that stream is gone for good (`make clean` wiped it), stop " +
			"every taskledger serve on this database and run `" + adoptCommand + "` with this configuration", true
	case errors.As(err, &stream):
		return fmt.Sprintf("TASKLEDGER_PARTITIONS (--partitions) asks for %d; to keep the stream's %d, set it back. "+
			"To change it, stop every replica, then run `taskledger replay --all` with TASKLEDGER_PARTITIONS=%d",
			stream.Configured, stream.Stored, stream.Configured), true
	case errors.As(err, &kept):
		return fmt.Sprintf("TASKLEDGER_PARTITIONS (--partitions) asks for %d; to change the count, stop every "+
			"replica, then run `taskledger replay --all` with TASKLEDGER_PARTITIONS=%d", kept.Configured, kept.Configured), true
	}
	for _, h := range hints {
		if errors.Is(err, h.err) {
			return h.hint, true
		}
	}
	return "", false
}

// withHint appends the hint for err, if there is one.
func withHint(err error) error {
	if hint, ok := advice(err); ok {
		return fmt.Errorf("%w\n  hint: %s", err, hint)
	}
	return err
}
