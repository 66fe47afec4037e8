package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// groupSyncBundle is an embedded server's stream with a GroupSync and an
// Appender that waits for it.
type groupSyncBundle struct {
	sync     *GroupSync
	appender *Appender
}

// startEmbedded starts an embedded server storing under dir, stopped
// after the test, and connects to it in-process.
func startEmbedded(t *testing.T, dir string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := StartServer(ServerOptions{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := Connect("", ns, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func newGroupSyncBundle(t *testing.T) *groupSyncBundle {
	t.Helper()
	dir := t.TempDir()
	nc, js := startEmbedded(t, dir)
	cfg := StreamConfig{Name: "GS", SubjectPrefix: "gs", DuplicateWindow: time.Minute}
	stream, err := EnsureStream(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGroupSync(dir, cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return &groupSyncBundle{sync: g, appender: NewAppender(nc, js, stream, cfg, WithGroupSync(g))}
}

func (b *groupSyncBundle) append(ctx context.Context, i int) (Appended, error) {
	body := fmt.Sprintf(`{"event":"task.completed","task_id":"t%d","completed_at":"2024-01-15T10:30:00Z"}`, i)
	r, err := NewRecord("tallyfy", []byte(body), time.Now())
	if err != nil {
		return Appended{}, err
	}
	return b.appender.Append(ctx, r)
}

// blockSizes is the size of every message block of the stream now.
func (b *groupSyncBundle) blockSizes(t *testing.T) map[string]int64 {
	t.Helper()
	blocks, err := filepath.Glob(filepath.Join(b.sync.dir, "*.blk"))
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no message blocks in %s (%v)", b.sync.dir, err)
	}
	out := map[string]int64{}
	for _, path := range blocks {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(path)] = info.Size()
	}
	return out
}

// An append returns once a sync round that started after its
// acknowledgement has put every block, as it then was, on disk; a
// duplicate waits for one too.
func TestAppendReturnsOnceTheBlocksAreSynced(t *testing.T) {
	t.Parallel()
	b := newGroupSyncBundle(t)
	for i, duplicate := range []bool{false, true} {
		before := b.sync.Rounds()
		got, err := b.append(context.Background(), 1)
		if err != nil || got.Duplicate != duplicate {
			t.Fatalf("append %d: %+v, %v; want duplicate %v", i, got, err, duplicate)
		}
		if b.sync.Rounds() == before {
			t.Errorf("append %d returned without a sync round", i)
		}
		for name, size := range b.blockSizes(t) {
			if synced := b.sync.synced[name]; synced == nil || synced.Size() < size {
				t.Errorf("append %d returned with block %s of %d bytes synced up to %v", i, name, size, synced)
			}
		}
	}
}

// Concurrent appends share sync rounds: under load one fsync serves many.
func TestConcurrentAppendsShareSyncRounds(t *testing.T) {
	t.Parallel()
	b := newGroupSyncBundle(t)
	const senders, each = 32, 20
	before := b.sync.Rounds()
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if _, err := b.append(context.Background(), s*each+i); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rounds := b.sync.Rounds() - before
	if rounds == 0 || rounds >= senders*each {
		t.Errorf("%d appends took %d sync rounds, want at least one and fewer than one each", senders*each, rounds)
	}
	t.Logf("%d appends, %d sync rounds", senders*each, rounds)
}

// When the blocks cannot be synced, the append is unavailable (a 503 to
// the sender, who retries), never answered as durable.
func TestAppendIsUnavailableWhenTheSyncFails(t *testing.T) {
	t.Parallel()
	b := newGroupSyncBundle(t)
	b.sync.dir = filepath.Join(t.TempDir(), "gone")
	if _, err := b.append(context.Background(), 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append with a failing sync: %v, want ErrUnavailable", err)
	}
	if _, err := NewGroupSync(t.TempDir(), "GS"); err == nil {
		t.Error("NewGroupSync found a stream in an empty store")
	}
}
