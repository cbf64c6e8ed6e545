package closure

import (
	"context"
	"fmt"
	"runtime"
	"sync"
)

// maxBatch bounds how many paths a worker takes from the queue at once: one
// lock round trip per batch instead of one per path or edge, small enough
// that the other workers are not left idle at the end of the walk.
const maxBatch = 16

// node is one derivation of the closure, numbered in the order found.
type node struct {
	path string
	// by is the node that first needed this one, -1 for a root; it names
	// the dependent in the error when this one cannot be read.
	by int32
	// ins are the indices of InputDrvs, edges[ins0:ins1].
	ins0, ins1 int32
	drv        *Drv
}

// walker holds the closure found so far. Everything in it is guarded by
// mu; a worker reads files with the lock released.
type walker struct {
	ctx     context.Context
	mu      sync.Mutex
	wake    sync.Cond // queue not empty, or the walk is over
	idle    int       // workers waiting on wake
	workers int
	index   map[string]int32 // path → node
	nodes   []node
	edges   []int32
	queue   []int32 // nodes to read
	pending int     // nodes queued or being read
	err     error
}

// add numbers path and queues it unless it is known. It returns the node.
func (w *walker) add(path string, by int32) int32 {
	if i, ok := w.index[path]; ok {
		return i
	}
	i := int32(len(w.nodes))
	w.index[path] = i
	w.nodes = append(w.nodes, node{path: path, by: by})
	w.queue = append(w.queue, i)
	w.pending++
	return i
}

// walk reads the closure of roots with n workers.
func walk(ctx context.Context, roots []string, n int) (*walker, error) {
	w := &walker{ctx: ctx, workers: n, index: make(map[string]int32, 4*len(roots)+64)}
	w.wake.L = &w.mu
	for _, r := range roots {
		w.add(r, -1)
	}
	var wg sync.WaitGroup
	for range n {
		wg.Go(w.work)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.err != nil {
		return nil, w.err
	}
	return w, nil
}

// work takes batches of paths from the queue, reads them, and records what
// it read (queueing the inputs not seen yet) until the queue is empty with
// nothing being read, or the walk failed.
func (w *walker) work() {
	var (
		r     reader
		batch []int32
		paths []string
		read  []Drv
		errs  []error
	)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.queue) == 0 && w.pending > 0 && w.err == nil {
			w.idle++
			w.wake.Wait()
			w.idle--
		}
		if w.pending == 0 || w.err != nil {
			return
		}
		k := min(maxBatch, max(1, len(w.queue)/w.workers))
		batch = append(batch[:0], w.queue[len(w.queue)-k:]...)
		w.queue = w.queue[:len(w.queue)-k]
		paths = paths[:0]
		for _, i := range batch {
			paths = append(paths, w.nodes[i].path)
		}
		if len(w.queue) > 0 && w.idle > 0 {
			w.wake.Signal()
		}
		w.mu.Unlock()

		// A new slice for every batch: the nodes keep pointers into it.
		read, errs = make([]Drv, 0, len(paths)), errs[:0]
		for _, p := range paths {
			if w.ctx.Err() != nil {
				break
			}
			d, err := r.read(p)
			read, errs = append(read, d), append(errs, err)
		}

		w.mu.Lock()
		if err := w.ctx.Err(); err != nil && w.err == nil {
			w.err = err
		}
		for j, err := range errs {
			if err == nil {
				continue
			}
			if w.err == nil {
				if by := w.nodes[batch[j]].by; by >= 0 {
					err = fmt.Errorf("%w (an input of %s)", err, w.nodes[by].path)
				}
				w.err = err
			}
		}
		if w.err != nil {
			w.wake.Broadcast()
			return
		}
		for j, i := range batch {
			d := &read[j]
			start := int32(len(w.edges))
			for _, in := range d.InputDrvs {
				w.edges = append(w.edges, w.add(in, i))
			}
			n := &w.nodes[i]
			n.ins0, n.ins1 = start, int32(len(w.edges))
			n.drv = d
		}
		w.pending -= len(batch)
		switch {
		case w.pending == 0:
			w.wake.Broadcast()
		case len(w.queue) > 0 && w.idle > 0:
			w.wake.Signal()
		}
	}
}

// workers is how many goroutines read .drv files at once. From the page
// cache a read costs a fifth of a parse, and idle workers cost nothing (they
// wait on the queue), so the extra ones only matter when reads wait for the
// disk: then they keep several reads in flight.
func workers() int { return 4 * runtime.GOMAXPROCS(0) }
