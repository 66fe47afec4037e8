package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// GroupSync makes acknowledged appends to the embedded server's stream
// survive power loss with one fsync for many of them: group commit.
//
// The embedded file store writes every message to the operating system
// before it acknowledges it (it flushes in place), and fsyncs only on its
// sync interval. A caller that got its acknowledgement calls Sync, which
// returns once an fsync of the stream's message blocks that started after
// the call has finished: so the acknowledged message, already written, is
// on disk. Calls that arrive while an fsync runs wait for the next one,
// which serves them all; under load one fsync covers as many appends as
// arrived during the previous one, and an idle service pays one fsync per
// append, as with the store's own sync-always.
//
// The file store recovers from its message blocks: at start it checks its
// index against the last block's checksum and any newer blocks, and
// rebuilds what is stale. So the blocks (and the directory entries of new
// ones) must be on disk, and the stream's own files (its configuration,
// rewritten when the stream is declared), which NewGroupSync syncs once.
type GroupSync struct {
	dir string // the stream's message blocks

	mu      sync.Mutex
	running bool                // a round is under way, or about to start
	waiting []chan error        // calls for the next round
	files   map[string]*os.File // open blocks, by name
	closed  bool

	// Used by the syncing goroutine only.
	synced map[string]os.FileInfo // block name to the file as last fsynced

	rounds atomic.Uint64
}

// NewGroupSync syncs the message blocks of stream in the file store under
// storeDir (the embedded server's StoreDir). The stream must exist.
func NewGroupSync(storeDir, stream string) (*GroupSync, error) {
	dirs, err := filepath.Glob(filepath.Join(storeDir, "jetstream", "*", "streams", stream, "msgs"))
	if err != nil || len(dirs) != 1 {
		return nil, fmt.Errorf("find the message blocks of stream %s under %s: found %d directories (%v)", stream, storeDir, len(dirs), err)
	}
	g := &GroupSync{dir: dirs[0], synced: map[string]os.FileInfo{}, files: map[string]*os.File{}}
	// What the store wrote before, the stream's declaration included (its
	// configuration files, written without an fsync), is synced once now;
	// the directories' entries too.
	streamDir := filepath.Dir(g.dir)
	entries, err := os.ReadDir(streamDir)
	if err != nil {
		return nil, fmt.Errorf("sync stream: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := syncPath(filepath.Join(streamDir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range []string{streamDir, filepath.Dir(streamDir)} {
		if err := syncPath(d); err != nil {
			return nil, err
		}
	}
	if err := g.syncBlocks(); err != nil {
		return nil, err
	}
	return g, nil
}

// Sync returns once everything the store had written when Sync was called
// is on disk, or with the error of the fsync that should have put it there
// (then the caller must not answer as if it were durable), or when ctx
// ends.
func (g *GroupSync) Sync(ctx context.Context) error {
	done := make(chan error, 1)
	g.mu.Lock()
	g.waiting = append(g.waiting, done)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rounds is how many fsync rounds have run.
func (g *GroupSync) Rounds() uint64 { return g.rounds.Load() }

// Close closes the block files it holds open; a sync after it fails.
func (g *GroupSync) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for name, f := range g.files {
		f.Close()
		delete(g.files, name)
	}
}

// run syncs in rounds while calls wait, each round serving the calls that
// arrived before it started.
func (g *GroupSync) run() {
	for {
		g.mu.Lock()
		calls := g.waiting
		g.waiting = nil
		if len(calls) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		err := g.syncBlocks()
		g.rounds.Add(1)
		for _, done := range calls {
			done <- err
		}
	}
}

// syncBlocks fsyncs every block that changed since it last did (grew, or
// was replaced by a rewritten file), and the directory when a block
// appeared, went or was replaced.
func (g *GroupSync) syncBlocks() error {
	entries, err := os.ReadDir(g.dir)
	if err != nil {
		return fmt.Errorf("sync stream: %w", err)
	}
	seen := map[string]bool{}
	changedDir := false
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".blk") {
			continue
		}
		seen[name] = true
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the listing: nothing to keep
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		prev, known := g.synced[name]
		if known && os.SameFile(prev, info) && prev.Size() == info.Size() {
			continue
		}
		f, err := g.open(name, info)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sync stream block %s: %w", name, err))
			continue
		}
		if !known || !os.SameFile(prev, info) {
			changedDir = true
		}
		g.synced[name] = info
	}
	for name := range g.synced {
		if !seen[name] {
			delete(g.synced, name)
			g.forget(name)
			changedDir = true
		}
	}
	if changedDir {
		if err := syncPath(g.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forget closes block name, gone from the store.
func (g *GroupSync) forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.files[name]; f != nil {
		f.Close()
		delete(g.files, name)
	}
}

// errClosed is the error of a sync after Close.
var errClosed = errors.New("stream sync closed")

// open returns the block file name, opened once for each file that has
// that name (info): a block rewritten into a new file is opened anew.
func (g *GroupSync) open(name string, info os.FileInfo) (*os.File, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errClosed
	}
	if f := g.files[name]; f != nil {
		if open, err := f.Stat(); err == nil && os.SameFile(open, info) {
			return f, nil
		}
		f.Close()
		delete(g.files, name)
	}
	f, err := os.Open(filepath.Join(g.dir, name))
	if err != nil {
		return nil, err
	}
	g.files[name] = f
	return f, nil
}

// syncPath fsyncs a file or directory by name.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
