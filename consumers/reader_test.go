package consumers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestReaderReadsInOrderFromASequenceInBoundedBatches(t *testing.T) {
	t.Parallel()
	s := newTestStream(t)
	var last uint64
	for i := range 10 {
		last = s.publish(t, fmt.Sprintf(`{"event":"task.completed","task_id":"t%d","completed_at":"2024-01-15T10:30:00Z"}`, i))
	}
	// read reads from seq from until the last event, then expects an empty
	// batch: caught up. An empty batch before that is only a slow delivery.
	read := func(opts ReadOptions, from uint64) (seqs []uint64, sizes []int) {
		t.Helper()
		opts.Stream, opts.Subjects = s.cfg.Name, []string{s.cfg.AllSubjects()}
		opts.Wait, opts.Linger = 200*time.Millisecond, 50*time.Millisecond
		r, err := OpenReader(context.Background(), s.js, opts, from)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for empties := 0; len(seqs) == 0 || seqs[len(seqs)-1] < last; {
			b, err := r.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Entries) == 0 {
				if empties++; empties == 50 {
					t.Fatalf("read %v from seq %d, then nothing more", seqs, from)
				}
				continue
			}
			sizes = append(sizes, len(b.Entries))
			for _, e := range b.Entries {
				seqs = append(seqs, e.Message.Seq)
			}
		}
		if b, err := r.Next(context.Background()); err != nil || len(b.Entries) != 0 {
			t.Fatalf("after the last event: %d more, %v; want an empty batch", len(b.Entries), err)
		}
		return seqs, sizes
	}

	seqs, sizes := read(ReadOptions{MaxCount: 3, MaxBytes: 1 << 20}, 4)
	if len(seqs) != int(last-3) {
		t.Fatalf("read %v from seq 4, want 4..%d", seqs, last)
	}
	for i, seq := range seqs {
		if seq != uint64(4+i) {
			t.Fatalf("read %v from seq 4, want 4..%d in order", seqs, last)
		}
	}
	for _, n := range sizes {
		if n > 3 {
			t.Errorf("batch sizes %v, want at most 3", sizes)
		}
	}
	// Every event is far over 1 byte: a byte bound of 1 makes batches of one.
	if _, sizes := read(ReadOptions{MaxCount: 100, MaxBytes: 1}, 1); len(sizes) != int(last) {
		t.Errorf("batch sizes %v under a 1-byte bound, want %d batches of one", sizes, last)
	}
}

// A reader of large events holds a few of them, not a count's worth: what
// the server has delivered to it stays within about readAhead and two
// batches of bytes.
func TestReaderReadsAheadByBytes(t *testing.T) {
	t.Parallel()
	s := newTestStream(t)
	const events, size = 40, 256 << 10
	for i := range events {
		pad := strings.Repeat("x", size)
		s.publish(t, fmt.Sprintf(`{"event":"task.completed","task_id":"t%d","completed_at":"2024-01-15T10:30:00Z","pad":%q}`, i, pad))
	}
	opts := ReadOptions{Stream: s.cfg.Name, Subjects: []string{s.cfg.AllSubjects()}, MaxCount: 500, MaxBytes: 1 << 20}
	r, err := OpenReader(context.Background(), s.js, opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stream, err := s.js.Stream(context.Background(), s.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	// delivered is the last sequence the server sent the (only) consumer.
	delivered := func() uint64 {
		infos := stream.ListConsumers(context.Background())
		var seq uint64
		for info := range infos.Info() {
			seq = max(seq, info.Delivered.Stream)
		}
		if err := infos.Err(); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	// Nobody takes a batch: the reader fills what it may hold and stops.
	deadline := time.Now().Add(5 * time.Second)
	for delivered() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	held := readAhead(opts.withDefaults(), s.js.Conn().MaxPayload()) + 2*(opts.MaxBytes+size)
	if n := delivered(); n == 0 || n > uint64(held/size) {
		t.Errorf("the reader was sent %d events of %d KB, want 1 to %d (%d MB)", n, size>>10, held/size, held>>20)
	}
	// And it still reads them all, in order.
	var next uint64 = 1
	for next <= events {
		b, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Entries {
			if e.Message.Seq != next {
				t.Fatalf("read seq %d, want %d", e.Message.Seq, next)
			}
			next++
		}
	}
}

// A backlog is read in whole batches even where a batch spans two of the
// library's pulls: the next pull is a round trip away, far longer than the
// linger, but the events are known to be stored.
func TestReaderFillsBatchesFromABacklog(t *testing.T) {
	t.Parallel()
	s := newTestStream(t)
	const events, size, batch = 1000, 5 << 10, 150
	for i := range events {
		s.publish(t, fmt.Sprintf(`{"event":"task.completed","task_id":"t%d","completed_at":"2024-01-15T10:30:00Z","pad":%q}`, i, strings.Repeat("x", size)))
	}
	opts := ReadOptions{Stream: s.cfg.Name, Subjects: []string{s.cfg.AllSubjects()}, MaxCount: batch, MaxBytes: 1 << 20,
		Wait: 5 * time.Second, Linger: time.Millisecond}
	if ahead := readAhead(opts.withDefaults(), s.js.Conn().MaxPayload()); ahead/size >= events || batch*(size+1<<10) > opts.MaxBytes {
		t.Fatalf("a pull of %d bytes holds the whole backlog, or the byte bound ends batches: the test proves nothing", ahead)
	}
	r, err := OpenReader(context.Background(), s.js, opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var sizes []int
	for read := 0; read < events; {
		b, err := r.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sizes, read = append(sizes, len(b.Entries)), read+len(b.Entries)
	}
	for i, n := range sizes[:len(sizes)-1] {
		if n != batch {
			t.Fatalf("batch %d of %v holds %d events, want %d: a backlog fills whole batches", i, sizes, n, batch)
		}
	}
}
