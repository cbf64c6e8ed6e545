package bench

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/services/ingress"
)

// TestSchedulerAtScaleMatchesTheGraph runs a generated 5,000-derivation
// graph with a random failure pattern through the real scheduler and checks
// every final state against the one computed from the graph directly: a
// derivation succeeds iff it and all its transitive dependencies do, after
// one retry. Not timed.
// It runs twice: with failures recorded as the defaults say (one fact per
// derivation below ingress.DefaultBatchOver downstream, one
// downstream_failed fact above), and with every failure that reaches more
// than one derivation recorded as one downstream_failed fact.
func TestSchedulerAtScaleMatchesTheGraph(t *testing.T) {
	for _, tc := range []struct {
		name string
		lim  ingress.Limits
	}{{"default limits", ingress.Limits{}}, {"every failure one fact", ingress.Limits{BatchOver: 1}}} {
		t.Run(tc.name, func(t *testing.T) { schedulerAtScale(t, tc.lim) })
	}
}

func schedulerAtScale(t *testing.T, lim ingress.Limits) {
	const n = 5000
	g := graphgen.Generate(graphgen.Params{N: n, Seed: 42})
	r := rand.New(rand.NewPCG(42, 7))
	always, once := map[string]bool{}, map[string]bool{}
	ids := make([]string, n)
	for i := range g.Nodes {
		ids[i], _ = Discovered(g, i)
		switch x := r.Float64(); {
		case x < 0.004:
			always[ids[i]] = true
		case x < 0.06:
			once[ids[i]] = true
		}
	}
	want := make([]buildstate.State, n)
	for i, node := range g.Nodes {
		want[i] = buildstate.Succeeded
		for _, in := range node.Inputs {
			if want[in] != buildstate.Succeeded {
				want[i] = buildstate.TransitiveFailure
			}
		}
		if want[i] == buildstate.Succeeded && always[ids[i]] {
			want[i] = buildstate.Failed
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := Start(ctx, Options{Dir: t.TempDir(), Systems: []string{"x86_64-linux", "aarch64-linux"}, IngressLimits: lim,
		Fail: func(id string, attempt uint32) bool { return always[id] || (once[id] && attempt == 1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Discover(ctx, g); err != nil {
		t.Fatal(err)
	}
	for p.Count("build_succeeded")+p.Count("build_failed")+p.Count("dependency_failed") < n {
		if ctx.Err() != nil {
			t.Fatalf("not settled: %d succeeded, %d failed, %d transitive", p.Count("build_succeeded"), p.Count("build_failed"), p.Count("dependency_failed"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything extra (a duplicate) would show below
	histories := map[string][]*eventsv1.Event{}
	batched := 0
	err = p.Events.Read(ctx, 0, []string{eventlog.KindFilter(eventlog.Drv)}, func(rec eventlog.Record) error {
		// Read hands a downstream_failed fact on a failed derivation over
		// with the dependency_failed of each derivation it lists.
		histories[rec.ID] = append(histories[rec.ID], rec.Event)
		if rec.RecordedOn != "" {
			batched++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wrong := 0
	for i, id := range ids {
		cur, err := buildstate.Fold(histories[id])
		if err != nil {
			t.Errorf("%s: illegal history: %v", g.Nodes[i].Name, err)
			continue
		}
		if cur.State != want[i] {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s: %v, want %v (always=%v once=%v)", g.Nodes[i].Name, cur.State, want[i], always[id], once[id])
			}
		}
		if once[id] && want[i] == buildstate.Succeeded && cur.Attempt != 2 {
			t.Errorf("%s failed once and should have succeeded on attempt 2, not %d", g.Nodes[i].Name, cur.Attempt)
		}
	}
	counts := map[buildstate.State]int{}
	for _, s := range want {
		counts[s]++
	}
	t.Logf("expected %d succeeded, %d failed, %d transitive failures (%d of them in downstream_failed facts); %d wrong",
		counts[buildstate.Succeeded], counts[buildstate.Failed], counts[buildstate.TransitiveFailure], batched, wrong)
	if lim.BatchOver == 1 && batched == 0 {
		t.Fatal("no failure was recorded as a downstream_failed fact")
	}
	if counts[buildstate.Failed] == 0 || counts[buildstate.TransitiveFailure] == 0 || counts[buildstate.Succeeded] == 0 {
		t.Fatal("the failure pattern does not exercise every outcome")
	}
}
