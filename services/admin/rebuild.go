package admin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// errRebuilding: a rebuild is under way already.
var errRebuilding = errors.New("a rebuild of this read model is under way")

// modelFile and rebuildFile are the admin model's file and the one a
// rebuild folds into, in the data dir.
const (
	modelFile   = "admin.db"
	rebuildFile = "admin.db.rebuild"
)

// folding is one runner folding into one file.
type folding struct {
	runner *projection.Runner
	db     *bolt.DB
	stop   context.CancelFunc // nil: the stage's first runner, not ours to stop
	done   chan struct{}      // closed when Run returned (err set)
	err    error
	halted atomic.Bool // stopped on purpose
}

func (f *folding) run(ctx context.Context) {
	defer close(f.done)
	f.err = f.runner.Run(ctx)
}

// host keeps the admin model serving reads and rebuilds it beside itself:
// a rebuild folds the whole log into a new file with a runner of its own
// until it has passed what the serving model had folded when the rebuild
// began, then swaps it in (reads and after_seq waits move to it once the
// reads under way ended) and renames it over admin.db, so that the next
// start opens it. The replaced runner is stopped and its file closed;
// the stage's first runner, which may be on the process's shared event
// feed (a feed serves each of its models one run), is left to fold into
// its replaced file, unlinked, until the stage stops.
type host struct {
	ctx    context.Context // the stage's
	g      *errgroup.Group // runs the runners a rebuild starts
	events *eventlog.Log
	dir    string
	logger zerolog.Logger
	reads  *Reads

	rebuilding sync.Mutex

	mu      sync.Mutex
	serving *folding
	swapped chan struct{} // closed and replaced at each swap
}

func newHost(ctx context.Context, g *errgroup.Group, events *eventlog.Log, dir string, logger zerolog.Logger, reads *Reads, first *projection.Runner, db *bolt.DB) *host {
	return &host{ctx: ctx, g: g, events: events, dir: dir, logger: logger, reads: reads,
		serving: &folding{runner: first, db: db}, swapped: make(chan struct{})}
}

func (h *host) current() (*folding, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.serving, h.swapped
}

// Position is the serving model's.
func (h *host) Position() uint64 {
	f, _ := h.current()
	return f.runner.Position()
}

// WaitFor waits until the serving model has folded seq, following a swap.
func (h *host) WaitFor(ctx context.Context, seq uint64) error {
	for {
		f, swapped := h.current()
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-swapped:
				cancel()
			case <-wctx.Done():
			}
		}()
		err := f.runner.WaitFor(wctx, seq)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-swapped:
		default:
			return err
		}
	}
}

// close closes the file a rebuild left serving (the first is Run's).
func (h *host) close() {
	f, _ := h.current()
	if f.stop != nil {
		f.db.Close()
	}
}

// Rebuild folds the log into a new file and swaps it in (see host).
func (h *host) Rebuild(ctx context.Context) (*adminv1.RebuildReadModelResponse, error) {
	if !h.rebuilding.TryLock() {
		return nil, errRebuilding
	}
	defer h.rebuilding.Unlock()
	target := h.Position()
	side := filepath.Join(h.dir, rebuildFile)
	if err := os.Remove(side); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rebuild: remove a left-over %s: %w", side, err)
	}
	db, err := projection.Open(side)
	if err != nil {
		return nil, fmt.Errorf("rebuild: %w", err)
	}
	r, err := projection.New(db, h.events, NewModel(h.logger), projection.WithLogger(h.logger))
	if err != nil {
		db.Close()
		os.Remove(side)
		return nil, fmt.Errorf("rebuild: %w", err)
	}
	rctx, stop := context.WithCancel(h.ctx)
	f := &folding{runner: r, db: db, stop: stop, done: make(chan struct{})}
	go f.run(rctx)
	abandon := func(err error) (*adminv1.RebuildReadModelResponse, error) {
		f.halted.Store(true)
		stop()
		<-f.done
		db.Close()
		os.Remove(side)
		return nil, err
	}
	// Caught up with the serving model, unless its runner fails first.
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-f.done:
			cancel()
		case <-wctx.Done():
		}
	}()
	err = r.WaitFor(wctx, target)
	cancel()
	if err != nil {
		select {
		case <-f.done:
			return abandon(fmt.Errorf("rebuild: the new model's runner ended at %d of %d: %v", r.Position(), target, f.err))
		default:
		}
		return abandon(fmt.Errorf("rebuild: at %d of %d: %w", r.Position(), target, err))
	}
	if err := os.Rename(side, filepath.Join(h.dir, modelFile)); err != nil {
		return abandon(fmt.Errorf("rebuild: %w", err))
	}
	h.reads.swap(db)
	h.mu.Lock()
	prev := h.serving
	h.serving = f
	close(h.swapped)
	h.swapped = make(chan struct{})
	h.mu.Unlock()
	// From now on the stage ends if the new runner fails, as with the first.
	h.g.Go(func() error {
		<-f.done
		if f.halted.Load() || errors.Is(f.err, context.Canceled) {
			return nil
		}
		return f.err
	})
	if prev.stop != nil {
		prev.halted.Store(true)
		prev.stop()
		<-prev.done
		prev.db.Close()
	}
	out := &adminv1.RebuildReadModelResponse{Name: ReadModel, Position: r.Position()}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if name[0] != '_' {
				out.Rows += uint64(b.Stats().KeyN)
			}
			return nil
		})
	})
	h.logger.Info().Uint64("position", out.Position).Uint64("rows", out.Rows).Uint64("from", target).Msg("admin read model rebuilt from the event log and swapped in")
	return out, err
}
