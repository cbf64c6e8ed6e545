package builder

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ekaci/ekaci/services/builder/internal/nixbuild"
)

// TestBatcherSharesWaitingWorkAmongLanes checks the lanes' bookkeeping
// with a stand-in for nix-build: every job gets its own result, no lane
// runs more than maxBatch at once, work waiting while a batch runs goes
// into the next one, and never more lanes than configured run at a time.
func TestBatcherSharesWaitingWorkAmongLanes(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	running, peak := 0, 0
	release := make(chan struct{})
	runBatch = func(ctx context.Context, jobs []nixbuild.Job, _ nixbuild.Options) ([]nixbuild.Result, error) {
		mu.Lock()
		sizes = append(sizes, len(jobs))
		running++
		peak = max(peak, running)
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release // hold the first batch so the rest pile up
		}
		time.Sleep(5 * time.Millisecond)
		res := make([]nixbuild.Result, len(jobs))
		for i, j := range jobs {
			res[i] = nixbuild.Result{Outcome: nixbuild.Succeeded, Tail: j.DrvPath}
		}
		mu.Lock()
		running--
		mu.Unlock()
		return res, nil
	}
	t.Cleanup(func() { runBatch = nixbuild.Realise })

	bt := newBatcher(2, nixbuild.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go bt.run(ctx)

	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	submit := func(i int) {
		defer wg.Done()
		drv := fmt.Sprintf("/nix/store/%032d-x.drv", i)
		res, err := bt.build(ctx, ctx, nixbuild.Job{DrvPath: drv})
		switch {
		case err != nil:
			errs <- err
		case res.Tail != drv:
			errs <- fmt.Errorf("job %s got the result of %s", drv, res.Tail)
		}
	}
	wg.Add(1)
	go submit(0)
	time.Sleep(50 * time.Millisecond) // the first batch holds job 0
	for i := 1; i < n; i++ {
		wg.Add(1)
		go submit(i)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, s := range sizes {
		total += s
		if s > maxBatch {
			t.Errorf("a batch of %d, more than %d", s, maxBatch)
		}
	}
	if total != n {
		t.Errorf("%d jobs built, want %d", total, n)
	}
	if len(sizes) >= n/2 {
		t.Errorf("%d nix-build runs for %d jobs: waiting work was not batched (%v)", len(sizes), n, sizes)
	}
	if peak > 2 {
		t.Errorf("%d batches at once, more than the 2 lanes", peak)
	}
}
