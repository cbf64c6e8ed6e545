package builder

import (
	"context"
	"sync"

	"github.com/ekaci/ekaci/services/builder/internal/nixbuild"
)

// maxBatch bounds the derivations one nix-store gets: enough to pay Nix's
// start-up once for many trivial builds, few enough that a batch's last
// build does not wait long behind its first.
const maxBatch = 32

// runBatch is nixbuild.Realise; tests of the lanes replace it.
var runBatch = nixbuild.Realise

// batcher runs a pool's builds in batches: `lanes` nix-store processes at
// a time (the pool's max jobs), each building, one after another, the
// ready derivations that were waiting when it started. Every derivation
// handed to it is buildable, so none is an input of another.
type batcher struct {
	lanes int
	opts  nixbuild.Options

	mu    sync.Mutex
	queue []*pendingBuild
	idle  int
	wake  chan struct{}
}

// startFunc records that a build really starts (build_started); false
// means it must not be built after all (the request was stale, held by
// another builder, deferred or reported), with err when it should be
// retried.
type startFunc func(ctx context.Context) (bool, error)

type pendingBuild struct {
	job   nixbuild.Job
	start startFunc
	// taken ends when the request's handler stops waiting for a start
	// (the builder is shutting down): a lane then leaves it unstarted.
	taken context.Context
	done  chan batchResult
}

type batchResult struct {
	res     nixbuild.Result
	started bool
	err     error
}

func newBatcher(lanes int, opts nixbuild.Options) *batcher {
	return &batcher{lanes: max(lanes, 1), opts: opts, wake: make(chan struct{}, 1)}
}

// run keeps the lanes going until ctx ends; ctx should outlive the
// builder's own context by the shutdown grace, so running builds finish.
func (bt *batcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range bt.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bt.lane(ctx)
		}()
	}
	wg.Wait()
}

func (bt *batcher) lane(ctx context.Context) {
	for {
		bt.mu.Lock()
		for len(bt.queue) == 0 {
			bt.idle++
			bt.mu.Unlock()
			select {
			case <-ctx.Done():
				bt.mu.Lock()
				bt.idle--
				bt.mu.Unlock()
				return
			case <-bt.wake:
			}
			bt.mu.Lock()
			bt.idle--
		}
		// Share what waits among the lanes that are free now.
		n := min(maxBatch, (len(bt.queue)+bt.idle)/(bt.idle+1))
		n = max(n, 1)
		batch := append([]*pendingBuild(nil), bt.queue[:n]...)
		bt.queue = bt.queue[n:]
		if len(bt.queue) > 0 {
			select {
			case bt.wake <- struct{}{}:
			default:
			}
		}
		bt.mu.Unlock()

		started := bt.startAll(ctx, batch)
		if len(started) == 0 {
			continue
		}
		jobs := make([]nixbuild.Job, len(started))
		for i, p := range started {
			jobs[i] = p.job
		}
		results, err := runBatch(ctx, jobs, bt.opts)
		for i, p := range started {
			if err != nil {
				p.done <- batchResult{started: true, err: err}
			} else {
				p.done <- batchResult{started: true, res: results[i]}
			}
		}
	}
}

// startAll records the start of every build of a batch (at once: each is
// an append) and returns the ones to build; the others get their answer.
func (bt *batcher) startAll(ctx context.Context, batch []*pendingBuild) []*pendingBuild {
	ok := make([]bool, len(batch))
	var wg sync.WaitGroup
	for i, p := range batch {
		if p.taken.Err() != nil {
			p.done <- batchResult{err: p.taken.Err()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			started, err := p.start(ctx)
			if !started {
				p.done <- batchResult{err: err}
				return
			}
			ok[i] = true
		}()
	}
	wg.Wait()
	var started []*pendingBuild
	for i, p := range batch {
		if ok[i] {
			started = append(started, p)
		}
	}
	return started
}

// build queues one derivation and waits for its result. taken is the
// request handler's context: once it ends, a lane no longer starts the
// build. started says whether start recorded it.
func (bt *batcher) build(ctx, taken context.Context, job nixbuild.Job, start startFunc) (nixbuild.Result, bool, error) {
	p := &pendingBuild{job: job, start: start, taken: taken, done: make(chan batchResult, 1)}
	bt.mu.Lock()
	bt.queue = append(bt.queue, p)
	bt.mu.Unlock()
	select {
	case bt.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-p.done:
		return r.res, r.started, r.err
	case <-ctx.Done():
		return nixbuild.Result{}, false, ctx.Err()
	}
}
