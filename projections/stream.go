package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StreamIdentity names one incarnation of the event stream: the same name
// with another creation time is another stream (a wiped data directory, a
// new server), and checkpoints taken in one mean nothing in the other.
type StreamIdentity struct {
	Name    string
	Created time.Time
}

func (id StreamIdentity) String() string {
	return fmt.Sprintf("%s created %s", id.Name, id.Created.UTC().Format(time.RFC3339Nano))
}

// same compares at the microsecond, the precision Postgres keeps.
func (id StreamIdentity) same(other StreamIdentity) bool {
	return id.Name == other.Name && id.Created.Truncate(time.Microsecond).Equal(other.Created.Truncate(time.Microsecond))
}

// StreamMismatchError says the database follows another stream than the one
// the service reaches, or that its checkpoints are ahead of that stream. It
// names both sides and the two ways out; which settings and command take
// them is for the caller to tell.
type StreamMismatchError struct {
	Recorded StreamIdentity // zero when nothing was recorded
	// Current is the stream reached; its Created is zero when no stream
	// of that name exists (MissingStream).
	Current    StreamIdentity
	LastSeq    uint64 // the current stream's last sequence
	Checkpoint uint64 // the highest projection checkpoint
}

func (e *StreamMismatchError) Error() string {
	var what string
	if e.Recorded.Name == "" || e.Recorded.same(e.Current) {
		what = fmt.Sprintf("the projections' checkpoints reach sequence %d but stream %s ends at %d: the stream was reset or replaced",
			e.Checkpoint, e.Current, e.LastSeq)
	} else {
		here := fmt.Sprintf("the stream here is %s (last sequence %d)", e.Current, e.LastSeq)
		if e.Current.Created.IsZero() {
			here = "there is no stream " + e.Current.Name + " here"
		}
		what = fmt.Sprintf("the database follows stream %s (checkpoints up to %d), but %s: "+
			"a wiped data directory, another NATS server or another stream name", e.Recorded, e.Checkpoint, here)
	}
	return what + ". Either point taskledger at the stream the database follows, or rebuild every projection " +
		"from this stream and make the database follow it"
}

// MissingStream is the mismatch between the stream the database follows
// and a stream named name that does not exist; nil when the database
// records no stream.
func MissingStream(ctx context.Context, db DB, name string) (*StreamMismatchError, error) {
	checkpoint, err := highestCheckpoint(ctx, db)
	if err != nil {
		return nil, err
	}
	recorded, ok, err := RecordedStream(ctx, db)
	if err != nil || !ok {
		return nil, err
	}
	return &StreamMismatchError{Recorded: recorded, Current: StreamIdentity{Name: name}, Checkpoint: checkpoint}, nil
}

// RecordedStream returns the stream the database follows; ok is false when
// none is recorded yet.
func RecordedStream(ctx context.Context, db DB) (id StreamIdentity, ok bool, err error) {
	err = db.QueryRow(ctx, "SELECT stream_name, stream_created FROM stream_identity").Scan(&id.Name, &id.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return id, false, nil
	}
	if err != nil {
		return id, false, fmt.Errorf("read the stream the database follows: %w", err)
	}
	return id, true, nil
}

// StreamPosition reads the stream the service reaches and its last
// sequence.
type StreamPosition func(context.Context) (StreamIdentity, uint64, error)

// FollowsStream is VerifyStream without recording anything: it returns a
// *StreamMismatchError when the database follows another stream than the
// one position reads, or a checkpoint is ahead of that stream's end. It
// costs one stream position and a few small queries, for readiness probes.
func FollowsStream(ctx context.Context, db DB, position StreamPosition) error {
	f, err := readFollowed(ctx, db, position)
	if err != nil {
		return err
	}
	if mismatch := CheckStream(f.recorded, f.current, f.lastSeq, f.checkpoint); mismatch != nil {
		return mismatch
	}
	return nil
}

// VerifyStream checks that the database follows the stream position reads,
// and that no checkpoint is ahead of its last sequence. The first service to
// start on a database records that stream, unless the checkpoints already
// run ahead of it. It returns a *StreamMismatchError otherwise.
func VerifyStream(ctx context.Context, db DB, position StreamPosition) error {
	f, err := readFollowed(ctx, db, position)
	if err != nil {
		return err
	}
	if !f.isRecorded {
		if f.checkpoint > f.lastSeq {
			return &StreamMismatchError{Current: f.current, LastSeq: f.lastSeq, Checkpoint: f.checkpoint}
		}
		if _, err := db.Exec(ctx, `INSERT INTO stream_identity (stream_name, stream_created) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, f.current.Name, f.current.Created); err != nil {
			return fmt.Errorf("record the stream the database follows: %w", err)
		}
		// Another replica may have recorded another stream meanwhile.
		if f.recorded, _, err = RecordedStream(ctx, db); err != nil {
			return err
		}
	}
	if mismatch := CheckStream(f.recorded, f.current, f.lastSeq, f.checkpoint); mismatch != nil {
		return mismatch
	}
	return nil
}

// followed is what VerifyStream and FollowsStream compare.
type followed struct {
	checkpoint, lastSeq uint64 // the furthest any stage applied; the stream's end
	current, recorded   StreamIdentity
	isRecorded          bool // whether the database records a stream at all
}

// readFollowed reads the checkpoints before the stream's position: a
// consumer applies only stored events, so while events flow a checkpoint
// read first is never ahead of a last sequence read after it.
func readFollowed(ctx context.Context, db DB, position StreamPosition) (f followed, err error) {
	if f.checkpoint, err = highestCheckpoint(ctx, db); err != nil {
		return f, err
	}
	if f.current, f.lastSeq, err = position(ctx); err != nil {
		return f, err
	}
	f.recorded, f.isRecorded, err = RecordedStream(ctx, db)
	return f, err
}

// CheckStream compares the stream the database follows, recorded (zero if
// none is), with current, whose last sequence is lastSeq, for a projection
// at checkpoint. It returns nil when they agree.
func CheckStream(recorded, current StreamIdentity, lastSeq, checkpoint uint64) *StreamMismatchError {
	if (recorded.Name != "" && !recorded.same(current)) || checkpoint > lastSeq {
		return &StreamMismatchError{Recorded: recorded, Current: current, LastSeq: lastSeq, Checkpoint: checkpoint}
	}
	return nil
}

// AdoptStream makes the database follow id. Call it only once every
// projection has been rebuilt from that stream.
func AdoptStream(ctx context.Context, db DB, id StreamIdentity) error {
	_, err := db.Exec(ctx, `INSERT INTO stream_identity (stream_name, stream_created) VALUES ($1, $2)
		ON CONFLICT (singleton) DO UPDATE SET stream_name = excluded.stream_name,
			stream_created = excluded.stream_created, recorded_at = now()`, id.Name, id.Created)
	if err != nil {
		return fmt.Errorf("record the adopted stream: %w", err)
	}
	return nil
}

// highestCheckpoint is the furthest any live stage has applied.
func highestCheckpoint(ctx context.Context, db DB) (uint64, error) {
	var highest uint64
	for _, p := range Every {
		cp, err := liveCheckpoint(ctx, db, p)
		if err != nil {
			return 0, err
		}
		highest = max(highest, cp)
	}
	return highest, nil
}

// liveCheckpoint reads the furthest of p's partition checkpoints: one
// partition ahead of the stream is enough to be ahead. A dropped live
// schema counts as 0.
func liveCheckpoint(ctx context.Context, db DB, p Projection) (uint64, error) {
	var exists bool
	if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table(p.Name, "checkpoint")).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	return FurthestCheckpoint(ctx, db, p.Name)
}
