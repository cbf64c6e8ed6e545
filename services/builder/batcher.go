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

type pendingBuild struct {
	job nixbuild.Job
	// taken ends when the request's handler stops waiting for a build to
	// begin (the builder is shutting down): a lane then leaves it out.
	taken context.Context
	done  chan batchResult
}

type batchResult struct {
	res nixbuild.Result
	err error
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

		var run []*pendingBuild
		for _, p := range batch {
			if err := p.taken.Err(); err != nil {
				p.done <- batchResult{err: err}
				continue
			}
			run = append(run, p)
		}
		if len(run) == 0 {
			continue
		}
		jobs := make([]nixbuild.Job, len(run))
		for i, p := range run {
			jobs[i] = p.job
		}
		results, err := runBatch(ctx, jobs, bt.opts)
		for i, p := range run {
			if err != nil {
				p.done <- batchResult{err: err}
			} else {
				p.done <- batchResult{res: results[i]}
			}
		}
	}
}

// build queues one derivation and waits for its result: the batch's, or
// an early one (job.OnDone, a success known before the batch ends). taken
// is the request handler's context (or a shorter one, until a drain):
// once it ends, a build still queued is left out and build returns.
func (bt *batcher) build(ctx, taken context.Context, job nixbuild.Job) (nixbuild.Result, error) {
	early := make(chan nixbuild.Result, 1)
	onDone := job.OnDone
	job.OnDone = func(r nixbuild.Result) {
		if onDone != nil {
			onDone(r)
		}
		early <- r
	}
	p := &pendingBuild{job: job, taken: taken, done: make(chan batchResult, 1)}
	bt.mu.Lock()
	bt.queue = append(bt.queue, p)
	bt.mu.Unlock()
	select {
	case bt.wake <- struct{}{}:
	default:
	}
	takenDone := taken.Done()
	for {
		select {
		case r := <-p.done:
			return r.res, r.err
		case r := <-early:
			return r, nil
		case <-ctx.Done():
			return nixbuild.Result{}, ctx.Err()
		case <-takenDone:
			// Still queued: out of the queue at once (a drain hands it back
			// without waiting for the lanes); taken by a lane already: it
			// runs, and its result is waited for.
			if bt.dequeue(p) {
				return nixbuild.Result{}, taken.Err()
			}
			takenDone = nil
		}
	}
}

// dequeue removes p from the queue if no lane has taken it yet.
func (bt *batcher) dequeue(p *pendingBuild) bool {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	for i, q := range bt.queue {
		if q == p {
			bt.queue = append(bt.queue[:i], bt.queue[i+1:]...)
			return true
		}
	}
	return false
}
