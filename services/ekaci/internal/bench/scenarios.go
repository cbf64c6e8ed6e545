package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ekaci/ekaci/libs/graphgen"
)

// ScheduleResult is one run of the scheduler over a generated graph.
type ScheduleResult struct {
	N          int
	Edges      int
	Ingest     time.Duration // discovered appended → every root Buildable
	Schedule   time.Duration // first discovered appended → every derivation Completed(Success)
	Messages   int64         // JetStream messages ekaci wrote (events + work items)
	PerDrv     float64
	Buildables int64
}

// Schedule moves a generated graph of n derivations from discovery to all
// Completed(Success) with the no-op builder.
func Schedule(ctx context.Context, dir string, n int, seed uint64) (ScheduleResult, error) {
	g := graphgen.Generate(graphgen.Params{N: n, Seed: seed})
	st := g.Stats()
	res := ScheduleResult{N: n, Edges: st.Edges}
	p, err := Start(ctx, Options{Dir: dir, Systems: []string{"x86_64-linux", "aarch64-linux"}})
	if err != nil {
		return res, err
	}
	defer p.Close()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- p.Discover(ctx, g) }()
	if err := p.WaitCount(ctx, "buildable", int64(st.Roots)); err != nil {
		return res, err
	}
	res.Ingest = time.Since(start)
	if err := <-errc; err != nil {
		return res, err
	}
	if err := p.WaitCount(ctx, "build_succeeded", int64(n)); err != nil {
		return res, err
	}
	res.Schedule = time.Since(start)
	last, err := p.Log.LastSeq(ctx)
	if err != nil {
		return res, err
	}
	res.Messages = int64(last) + 2*int64(n) // events, plus a build request and a report per build
	res.PerDrv = float64(res.Messages) / float64(n)
	res.Buildables = p.Count("buildable")
	return res, nil
}

func (r ScheduleResult) String() string {
	return fmt.Sprintf("%d drvs, %d edges: ingest %v, schedule %v (%.0f drv/s), %.1f msgs/drv",
		r.N, r.Edges, r.Ingest.Round(time.Millisecond), r.Schedule.Round(time.Millisecond), float64(r.N)/r.Schedule.Seconds(), r.PerDrv)
}
