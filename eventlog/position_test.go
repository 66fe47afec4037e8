package eventlog

import (
	"context"
	"testing"
	"time"
)

// FirstAfter finds the next stored event on any subject of the stream, past
// deleted ones, and says when there is none.
func TestFirstAfter(t *testing.T) {
	t.Parallel()
	_, js := startEmbedded(t, t.TempDir())
	ctx := context.Background()
	cfg := StreamConfig{Name: "FA", SubjectPrefix: "fa", DuplicateWindow: time.Minute, Partitions: 2}
	stream, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pos := NewPosition(js, cfg)
	if _, ok, err := pos.FirstAfter(ctx, 0); ok || err != nil {
		t.Fatalf("an empty stream: ok %v, %v; want none", ok, err)
	}
	var stored []time.Time
	for _, task := range []string{"a", "b", "c"} {
		if _, err := js.Publish(ctx, cfg.Subject("tallyfy", task), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, uint64(len(stored)+1))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m.Time)
	}
	if err := stream.DeleteMsg(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		after uint64
		want  time.Time
		ok    bool
	}{{0, stored[0], true}, {1, stored[2], true}, {2, stored[2], true}, {3, time.Time{}, false}} {
		got, ok, err := pos.FirstAfter(ctx, c.after)
		if err != nil || ok != c.ok || !got.Equal(c.want) {
			t.Errorf("after %d: %v, %v, %v; want %v, %v", c.after, got, ok, err, c.want, c.ok)
		}
	}
}
