package ingress_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
	"github.com/ekaci/ekaci/services/ingress"
)

type fixture struct {
	t     *testing.T
	ctx   context.Context
	log   *eventlog.Log
	db    *bolt.DB
	r     *projection.Runner
	graph *ingress.Graph
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, ingress.Limits{}) }

func newFixtureWith(t *testing.T, lim ingress.Limits) *fixture {
	return newFixtureOn(t, lim, eventlog.StreamOptions{})
}

// newFixtureOn runs the model over streams provisioned with opts (e.g. a
// short duplicate window).
func newFixtureOn(t *testing.T, lim ingress.Limits, opts eventlog.StreamOptions) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	js := eventlogtest.JetStreamWith(t, ctx, opts)
	log := eventlog.New(js)
	db := projectiontest.OpenDB(t, "ingress.db")
	graph := ingress.NewGraph(zerolog.Nop()).WithLimits(lim)
	r, err := projection.New(db, log, graph)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("ingress Run: %v", err)
		}
	})
	return &fixture{t: t, ctx: ctx, log: log, db: db, r: r, graph: graph}
}

// id makes a 32-character derivation id from a short name.
func id(name string) string { return fmt.Sprintf("%032s", name) }

func (f *fixture) discover(name string, valid bool, deps ...string) {
	f.t.Helper()
	var in []string
	for _, d := range deps {
		in = append(in, id(d))
	}
	ev := &eventsv1.Event{Id: "disc-" + name, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
		DrvPath: "/nix/store/" + id(name) + "-" + name + ".drv", System: "x86_64-linux", InputDrvs: in, OutputsValid: valid,
	}}}
	if _, err := f.log.Append(f.ctx, id(name), ev, eventlog.ExpectLast(0)); err != nil {
		f.t.Fatal(err)
	}
}

// settle waits until the model has folded everything appended so far,
// including what its own decisions appended in reaction.
func (f *fixture) settle() {
	f.t.Helper()
	for range 50 {
		last, err := f.log.LastSeq(f.ctx)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := f.r.WaitFor(f.ctx, last); err != nil {
			f.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if again, _ := f.log.LastSeq(f.ctx); again == last {
			return
		}
	}
	f.t.Fatal("the model never settled")
}

func (f *fixture) state(name string) buildstate.Drv {
	f.t.Helper()
	d, ok, err := ingress.State(f.db, id(name))
	if err != nil || !ok {
		f.t.Fatalf("state of %s: ok=%v err=%v", name, ok, err)
	}
	return d
}

func (f *fixture) expect(want map[string]buildstate.State) {
	f.t.Helper()
	f.settle()
	for name, s := range want {
		if got := f.state(name).State; got != s {
			f.t.Errorf("%s: state %s, want %s", name, got, s)
		}
	}
}

// build plays builder and recorder for one attempt.
func (f *fixture) build(name string, ok bool) {
	f.t.Helper()
	f.settle()
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id(name))
	if err != nil {
		f.t.Fatal(err)
	}
	cur := f.state(name)
	start := &eventsv1.Event{Id: fmt.Sprintf("start-%s-%d", name, cur.Attempt), Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: cur.Attempt}}}
	a, err := f.log.Append(f.ctx, id(name), start, eventlog.ExpectLast(last))
	if err != nil {
		f.t.Fatal(err)
	}
	building, _ := buildstate.Next(cur, start)
	var ev *eventsv1.Event
	if ok {
		ev = &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: cur.Attempt}}}
	} else {
		ev = &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: cur.Attempt, ExitCode: 1}}}
	}
	if _, err := buildstate.Next(building, ev); err != nil {
		f.t.Fatal(err)
	}
	ev.Id = fmt.Sprintf("end-%s-%d", name, cur.Attempt)
	if _, err := f.log.Append(f.ctx, id(name), ev, eventlog.ExpectLast(a.Seq)); err != nil {
		f.t.Fatal(err)
	}
}

func TestDiamondBuildsInDependencyOrder(t *testing.T) {
	f := newFixture(t)
	f.discover("base", false)
	f.discover("left", false, "base")
	f.discover("right", false, "base")
	f.discover("top", false, "left", "right")
	f.expect(map[string]buildstate.State{"base": buildstate.Buildable, "left": buildstate.Queued, "right": buildstate.Queued, "top": buildstate.Queued})
	f.build("base", true)
	f.expect(map[string]buildstate.State{"base": buildstate.Succeeded, "left": buildstate.Buildable, "right": buildstate.Buildable, "top": buildstate.Queued})
	f.build("left", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Queued})
	f.build("right", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Buildable})
}

// batchWays runs a test with failures recorded one fact per derivation
// (the default for small graphs) and as one downstream_failed fact.
var batchWays = []struct {
	name string
	lim  ingress.Limits
}{
	{"one fact each", ingress.Limits{}},
	{"one fact for all", ingress.Limits{BatchOver: 1}},
}

func TestFailurePropagatesDownstream(t *testing.T) {
	for _, way := range batchWays {
		t.Run(way.name, func(t *testing.T) { failurePropagatesDownstream(t, way.lim) })
	}
}

func failurePropagatesDownstream(t *testing.T, lim ingress.Limits) {
	f := newFixtureWith(t, lim)
	f.discover("base", false)
	f.discover("mid", false, "base")
	f.discover("leaf", false, "mid")
	f.discover("other", false)
	f.build("base", false)
	f.expect(map[string]buildstate.State{"base": buildstate.Failed, "mid": buildstate.TransitiveFailure, "leaf": buildstate.TransitiveFailure, "other": buildstate.Buildable})
	if got := f.state("leaf").Cause; got != id("base") {
		t.Fatalf("leaf's cause = %q, want base", got)
	}
	// A derivation discovered later on top of the failure fails at once.
	f.discover("late", false, "leaf")
	f.expect(map[string]buildstate.State{"late": buildstate.TransitiveFailure})
}

func TestValidOutputsSucceedWithoutBuild(t *testing.T) {
	f := newFixture(t)
	f.discover("cached", true)
	f.discover("user", false, "cached")
	f.expect(map[string]buildstate.State{"cached": buildstate.Succeeded, "user": buildstate.Buildable})
	if !f.state("cached").Cached {
		t.Fatal("cached success not marked cached")
	}
}

func TestInterruptionBlocksAndSuccessClears(t *testing.T) {
	f := newFixture(t)
	f.discover("flaky", false)
	f.discover("down", false, "flaky")
	f.settle()
	// Interrupt flaky (e.g. unsatisfiable) while Buildable.
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id("flaky"))
	if err != nil {
		t.Fatal(err)
	}
	intr := &eventsv1.Event{Id: "intr", Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{Kind: eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT}}}
	a, err := f.log.Append(f.ctx, id("flaky"), intr, eventlog.ExpectLast(last))
	if err != nil {
		t.Fatal(err)
	}
	f.expect(map[string]buildstate.State{"flaky": buildstate.Interrupted, "down": buildstate.Blocked})
	// A person re-queues it; it builds and succeeds; down is unblocked.
	req := &eventsv1.Event{Id: "req", Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "rebuild", NextAttempt: 2}}}
	if _, err := f.log.Append(f.ctx, id("flaky"), req, eventlog.ExpectLast(a.Seq)); err != nil {
		t.Fatal(err)
	}
	f.expect(map[string]buildstate.State{"flaky": buildstate.Buildable})
	f.build("flaky", true)
	f.expect(map[string]buildstate.State{"flaky": buildstate.Succeeded, "down": buildstate.Buildable})
}

// TestDiscoveredWhileAFailureIsOnItsWay discovers a dependent in the same
// breath as its dependency's dependency fails: the dependency's own
// TransitiveFailure is not yet in the log when the dependent is folded,
// and the dependent must still end TransitiveFailure, not wait forever.
func TestDiscoveredWhileAFailureIsOnItsWay(t *testing.T) {
	for _, way := range batchWays {
		t.Run(way.name, func(t *testing.T) { discoveredWhileAFailureIsOnItsWay(t, way.lim) })
	}
}

func discoveredWhileAFailureIsOnItsWay(t *testing.T, lim ingress.Limits) {
	f := newFixtureWith(t, lim)
	f.discover("base", false)
	f.discover("mid", false, "base")
	f.settle()
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id("base"))
	if err != nil {
		t.Fatal(err)
	}
	start := &eventsv1.Event{Id: "start-base-1", Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}}
	a, err := f.log.Append(f.ctx, id("base"), start, eventlog.ExpectLast(last))
	if err != nil {
		t.Fatal(err)
	}
	failed := &eventsv1.Event{Id: "end-base-1", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1, ExitCode: 1}}}
	late := &eventsv1.Event{Id: "disc-late", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
		DrvPath: "/nix/store/" + id("late") + "-late.drv", System: "x86_64-linux", InputDrvs: []string{id("mid")}}}}
	// Both on the wire before the model can react to the failure.
	_, errs, err := f.log.AppendMany(f.ctx, []eventlog.Item{
		{ID: id("base"), Event: failed, Expect: true, ExpectSeq: a.Seq},
		{ID: id("late"), Event: late, Expect: true},
	})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("append: %v %v", err, errs)
	}
	f.expect(map[string]buildstate.State{"base": buildstate.Failed, "mid": buildstate.TransitiveFailure, "late": buildstate.TransitiveFailure})
	if got := f.state("late").Cause; got != id("base") {
		t.Fatalf("late's cause = %q, want base", got)
	}
}

// facts counts the log's derivation facts by kind, and returns the ids each
// downstream_failed listed.
func (f *fixture) facts() (map[string]int, [][]string) {
	f.t.Helper()
	n := map[string]int{}
	var lists [][]string
	err := f.log.Read(f.ctx, 0, []string{eventlog.KindFilter(eventlog.Drv)}, func(r eventlog.Record) error {
		// Read hands a downstream_failed fact over, then the transition
		// it records for each derivation it lists.
		switch {
		case r.RecordedOn != "":
			lists[len(lists)-1] = append(lists[len(lists)-1], r.ID)
		case r.Fact == string(buildstate.KindDownstreamFailed):
			n[r.Fact]++
			lists = append(lists, nil)
		default:
			n[r.Fact]++
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return n, lists
}

// TestLargeFailureIsOneFact fails a derivation with six queued ones
// downstream, over the batch threshold: one downstream_failed fact on it
// lists as many as a fact may hold, the rest get a fact each, and every one
// ends TransitiveFailure naming it — also in a model rebuilt from the log,
// which appends nothing again.
func TestLargeFailureIsOneFact(t *testing.T) {
	f := newFixtureWith(t, ingress.Limits{BatchOver: 2, MaxPerFact: 4})
	f.discover("base", false)
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		f.discover(m, false, "base")
	}
	f.discover("leaf", false, "m1", "m2")
	f.build("base", false)
	want := map[string]buildstate.State{"base": buildstate.Failed}
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5", "leaf"} {
		want[m] = buildstate.TransitiveFailure
	}
	f.expect(want)
	for name := range want {
		if name != "base" && f.state(name).Cause != id("base") {
			t.Errorf("%s: cause %q, want base", name, f.state(name).Cause)
		}
	}
	n, lists := f.facts()
	if n["downstream_failed"] != 1 || len(lists) != 1 || len(lists[0]) != 4 || n["dependency_failed"] != 2 {
		t.Fatalf("facts %v, downstream lists %v; want one downstream_failed of 4 and 2 dependency_failed", n, lists)
	}
	// Nearest first: the direct dependents lead the list.
	if lists[0][0] != id("m1") {
		t.Fatalf("list %v does not start with m1", lists[0])
	}
	// A dependent discovered afterwards fails at once.
	f.discover("late", false, "leaf")
	f.expect(map[string]buildstate.State{"late": buildstate.TransitiveFailure})

	end, err := f.log.LastSeq(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	db := projectiontest.OpenDB(t, "rebuilt.db")
	r, err := projection.New(db, f.log, ingress.NewGraph(zerolog.Nop()).WithLimits(ingress.Limits{BatchOver: 2, MaxPerFact: 4}))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	if err := r.WaitFor(f.ctx, end); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let a wrongly re-decided fact land
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if again, _ := f.log.LastSeq(f.ctx); again != end {
		t.Fatalf("the rebuilt model appended %d events", again-end)
	}
	want["late"] = buildstate.TransitiveFailure
	for name, s := range want {
		d, ok, err := ingress.State(db, id(name))
		if err != nil || !ok || d.State != s {
			t.Errorf("rebuilt %s: %v %v %v, want %s", name, d.State, ok, err, s)
		}
	}
}

// TestRestartLoadsTheGraph stops the model mid-graph and starts a new one
// on the same file: the graph, counters and states come back from bbolt,
// and building goes on where it stopped.
func TestRestartLoadsTheGraph(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	path := filepath.Join(t.TempDir(), "ingress.db")
	open := func() (*fixture, func()) {
		db := projectiontest.OpenDB(t, path)
		r, err := projection.New(db, log, ingress.NewGraph(zerolog.Nop()))
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		return &fixture{t: t, ctx: ctx, log: log, db: db, r: r}, func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("ingress Run: %v", err)
			}
			db.Close()
		}
	}
	f, stop := open()
	f.discover("base", false)
	f.discover("left", false, "base")
	f.discover("right", false, "base")
	f.discover("mid", false, "base")
	f.discover("top", false, "left", "right", "mid")
	f.discover("bad", false)
	f.discover("usesBad", false, "bad")
	f.build("base", true)
	f.build("left", true)
	f.expect(map[string]buildstate.State{"right": buildstate.Buildable, "top": buildstate.Queued})
	stop()

	f, stop = open()
	defer stop()
	f.expect(map[string]buildstate.State{"base": buildstate.Succeeded, "left": buildstate.Succeeded, "right": buildstate.Buildable, "top": buildstate.Queued})
	// The counter of top came back: right's success leaves mid to wait
	// for (a lost counter would make top buildable now), mid's ends it.
	f.build("right", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Queued})
	f.build("mid", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Buildable})
	// So did the edges: a failure still reaches its dependents.
	f.build("bad", false)
	f.expect(map[string]buildstate.State{"bad": buildstate.Failed, "usesBad": buildstate.TransitiveFailure})
}
