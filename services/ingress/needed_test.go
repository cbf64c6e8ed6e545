package ingress_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
	"github.com/ekaci/ekaci/services/ingress"
)

// append puts ev on name's aggregate, guarded by its last sequence.
func (f *fixture) append(name string, ev *eventsv1.Event) {
	f.t.Helper()
	f.settle()
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id(name))
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.log.Append(f.ctx, id(name), ev, eventlog.ExpectLast(last)); err != nil {
		f.t.Fatalf("append %s on %s: %v", ev.GetId(), name, err)
	}
}

// interrupt records that name's current attempt could not run (the
// router's unsatisfiable, from Buildable).
func (f *fixture) interrupt(name string, kind eventsv1.InterruptKind) {
	f.t.Helper()
	f.settle()
	a := f.state(name).Attempt
	f.append(name, &eventsv1.Event{Id: fmt.Sprintf("intr-%s-%d", name, a), Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{Kind: kind, Attempt: a}}})
}

// evaluate lists a jobset's attributes as the evaluator does: the given
// parts as jobset_attrs_listed, the last in jobset_evaluated, each with
// the same event id as the first time when called again (a replay).
func (f *fixture) evaluate(jobset string, parts ...[]string) {
	f.t.Helper()
	attrs := func(names []string) []*eventsv1.JobAttr {
		var out []*eventsv1.JobAttr
		for _, n := range names {
			out = append(out, &eventsv1.JobAttr{Attr: n, DrvId: id(n), DrvPath: "/nix/store/" + id(n) + "-" + n + ".drv"})
		}
		return out
	}
	for i, p := range parts[:len(parts)-1] {
		ev := &eventsv1.Event{Id: fmt.Sprintf("attrs-%s-%d", jobset, i), Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{ChangeId: "c", Part: uint32(i), Attrs: attrs(p)}}}
		if _, err := f.log.Append(f.ctx, jobset, ev); err != nil {
			f.t.Fatal(err)
		}
	}
	ev := &eventsv1.Event{Id: "evaluated-" + jobset, Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: "c", Attrs: attrs(parts[len(parts)-1]), AttrParts: uint32(len(parts) - 1)}}}
	if _, err := f.log.Append(f.ctx, jobset, ev); err != nil {
		f.t.Fatal(err)
	}
}

// requeues lists the reasons of the requeued facts on name, in log order.
func (f *fixture) requeues(name string) []string {
	f.t.Helper()
	f.settle()
	recs, _, err := f.log.Load(f.ctx, eventlog.Drv, id(name))
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if q := r.Event.GetDrvRequeued(); q != nil {
			out = append(out, q.GetReason())
		}
	}
	return out
}

// TestNeededAgain is the review's finding 9: a derivation interrupted
// (unsatisfiable, before a builder for its system was added) or blocked
// behind one was final for every later change. A later jobset that needs
// it queues it again, inputs first, and it builds; a failed build stays
// failed.
func TestNeededAgain(t *testing.T) {
	unsat := eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE
	tests := []struct {
		name  string
		attrs []string // what the later jobset lists
	}{
		{"the interrupted derivation is an attribute", []string{"x"}},
		{"only its blocked dependent is an attribute", []string{"top"}},
		{"in an attrs_listed part", []string{"other"}}, // and top in the last part, below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.discover("base", false)
			f.discover("x", false, "base")
			f.discover("top", false, "x")
			f.discover("other", false)
			f.discover("bad", false)
			f.discover("usesBad", false, "bad")
			f.build("base", true)
			f.build("bad", false)
			f.interrupt("x", unsat)
			f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "top": buildstate.Blocked, "usesBad": buildstate.TransitiveFailure})

			if tt.name == "in an attrs_listed part" {
				f.evaluate("js2", tt.attrs, []string{"top", "usesBad"})
			} else {
				f.evaluate("js2", append(tt.attrs, "usesBad"))
			}
			f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "bad": buildstate.Failed, "usesBad": buildstate.TransitiveFailure})
			if got := f.state("x").Attempt; got != 2 {
				t.Fatalf("x is buildable for attempt %d, want 2", got)
			}
			if got := f.requeues("x"); len(got) != 1 || got[0] != ingress.ReasonNeededAgain {
				t.Fatalf("x requeued %v, want once, needed-again", got)
			}
			if got := f.requeues("bad"); len(got) != 0 {
				t.Fatalf("a failed build was queued again: %v", got)
			}
			// top follows: queued again, waiting for x, and built after it.
			f.expect(map[string]buildstate.State{"top": buildstate.Queued})
			if got := f.requeues("top"); len(got) != 1 {
				t.Fatalf("top requeued %v, want once", got)
			}
			f.build("x", true)
			f.expect(map[string]buildstate.State{"x": buildstate.Succeeded, "top": buildstate.Buildable})
		})
	}
}

// TestInterruptedAgainBlocksAgain: a derivation queued again that is
// interrupted again blocks what waits on it, so the later jobset still
// concludes.
func TestInterruptedAgainBlocksAgain(t *testing.T) {
	f := newFixture(t)
	f.discover("x", false)
	f.discover("top", false, "x")
	f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "top": buildstate.Blocked})
	f.evaluate("js2", []string{"top"})
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "top": buildstate.Queued})
	f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "top": buildstate.Blocked})
	if got := f.state("top").Cause; got != id("x") {
		t.Fatalf("top's cause = %q, want x", got)
	}
}

// TestDiscoveredOnAnInterruptionWaitsForItsJobset: a derivation discovered
// on top of an interrupted one is not blocked at once (its jobset would
// settle before its attributes are listed and the input queued again); it
// waits, and the jobset's listing queues the input.
func TestDiscoveredOnAnInterruptionWaitsForItsJobset(t *testing.T) {
	f := newFixture(t)
	f.discover("x", false)
	f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH)
	f.discover("late", false, "x")
	f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "late": buildstate.Queued})
	f.evaluate("js2", []string{"late"})
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "late": buildstate.Queued})
	f.build("x", true)
	f.expect(map[string]buildstate.State{"late": buildstate.Buildable})
}

// TestListedAgainDecidesNothingTwice replays a jobset's attribute lists
// after the duplicate window (a redelivery minutes later, with new stream
// sequences): nothing is queued again, though what they need was
// interrupted again in between.
func TestListedAgainDecidesNothingTwice(t *testing.T) {
	f := newFixtureOn(t, ingress.Limits{}, eventlog.StreamOptions{DuplicateWindow: time.Second})
	f.discover("x", false)
	f.discover("y", false)
	f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.interrupt("y", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.evaluate("js2", []string{"y"}, []string{"x"})
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "y": buildstate.Buildable})
	f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.interrupt("y", eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE)
	f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "y": buildstate.Interrupted})
	before, err := f.log.LastSeq(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the duplicate window
	f.evaluate("js2", []string{"y"}, []string{"x"})
	after, err := f.log.LastSeq(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != before+2 {
		t.Fatalf("the replay appended %d events, want its 2 (past the window)", after-before)
	}
	f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "y": buildstate.Interrupted})
	for _, name := range []string{"x", "y"} {
		if got := f.requeues(name); len(got) != 1 {
			t.Errorf("%s requeued %d times (%v), want once", name, len(got), got)
		}
	}
	// Another jobset needing them does queue them again.
	f.evaluate("js3", []string{"x", "y"})
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "y": buildstate.Buildable})
}

// TestSettledWorkLeavesMemory folds changes one after another, each with
// new derivations on top of the ones before: when a change's work is all
// settled, the model holds (almost) nothing in memory, however many came
// before (review finding 11: the graph only grew). The states stay right:
// the old derivations are read back when a later change builds on them.
func TestSettledWorkLeavesMemory(t *testing.T) {
	f := newFixture(t)
	const changes, width = 6, 8
	for c := range changes {
		var prev []string
		for i := range width {
			name := fmt.Sprintf("c%d-%d", c, i)
			var deps []string
			if c > 0 {
				deps = append(deps, fmt.Sprintf("c%d-%d", c-1, i), "c0-0")
			}
			if i > 0 {
				deps = append(deps, prev[i-1])
			}
			f.discover(name, false, deps...)
			prev = append(prev, name)
		}
		for _, name := range prev {
			f.build(name, true)
		}
		f.expect(map[string]buildstate.State{prev[width-1]: buildstate.Succeeded})
		// One more checkpoint lets go of what the last one settled.
		f.discover(fmt.Sprintf("tick%d", c), true)
		f.settle()
		if got := f.graph.Resident(); got > 2 {
			t.Fatalf("after change %d: %d derivations in memory, want at most 2", c, got)
		}
	}
	// A failure deep in history still reaches a new dependent.
	f.discover("old-bad", false)
	f.build("old-bad", false)
	f.discover("tick-x", true)
	f.settle()
	f.discover("new", false, "c0-3", "old-bad")
	f.expect(map[string]buildstate.State{"new": buildstate.TransitiveFailure})
}

// TestRestartLoadsOnlyWhatIsUnsettled: a model opened on a file with much
// settled history loads the unsettled derivations and their inputs only.
func TestRestartLoadsOnlyWhatIsUnsettled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	path := filepath.Join(t.TempDir(), "ingress.db")
	open := func() (*fixture, func()) {
		db := projectiontest.OpenDB(t, path)
		graph := ingress.NewGraph(zerolog.Nop())
		r, err := projection.New(db, log, graph)
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		return &fixture{t: t, ctx: ctx, log: log, db: db, r: r, graph: graph}, func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("ingress Run: %v", err)
			}
			db.Close()
		}
	}
	f, stop := open()
	for i := range 20 {
		f.discover(fmt.Sprintf("old%d", i), false)
		f.build(fmt.Sprintf("old%d", i), true)
	}
	f.discover("left", false, "old0")
	f.discover("right", false, "old1", "left")
	f.expect(map[string]buildstate.State{"left": buildstate.Buildable, "right": buildstate.Queued})
	stop()

	f, stop = open()
	defer stop()
	// left, right and their inputs old0 and old1.
	if got := f.graph.Resident(); got != 4 {
		t.Fatalf("%d derivations loaded, want 4", got)
	}
	f.build("left", true)
	f.expect(map[string]buildstate.State{"right": buildstate.Buildable})
}

// TestBlockOnItsWayWhenItsCauseIsNeededAgain: an interruption and a jobset
// that needs what it blocks arrive together, so the block can land after
// the interrupted derivation was asked for again. The block must not
// stick: the blocked derivation is queued again once, and waits for its
// cause.
func TestBlockOnItsWayWhenItsCauseIsNeededAgain(t *testing.T) {
	f := newFixture(t)
	f.discover("x", false)
	f.discover("top", false, "x")
	f.settle()
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id("x"))
	if err != nil {
		t.Fatal(err)
	}
	intr := &eventsv1.Event{Id: "intr-x-1", Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{Kind: eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH, Attempt: 1}}}
	evaluated := &eventsv1.Event{Id: "evaluated-js2", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: "c", Attrs: []*eventsv1.JobAttr{{Attr: "top", DrvId: id("top")}}}}}
	_, errs, err := f.log.AppendMany(f.ctx, []eventlog.Item{
		{ID: id("x"), Event: intr, Expect: true, ExpectSeq: last},
		{ID: "js2", Event: evaluated},
	})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("append: %v %v", err, errs)
	}
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "top": buildstate.Queued})
	if got := f.requeues("top"); len(got) != 1 {
		t.Fatalf("top requeued %v, want once", got)
	}
	f.build("x", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Buildable})
}

// TestBlockLandingAfterItsCauseWasQueuedAgain: the interrupted derivation
// is queued again (here by a person) before the block it caused is back
// from the log; the block, landing on a cause no longer interrupted, is
// cleared at once instead of sticking.
func TestBlockLandingAfterItsCauseWasQueuedAgain(t *testing.T) {
	f := newFixture(t)
	f.discover("x", false)
	f.discover("top", false, "x")
	f.settle()
	_, last, err := f.log.Load(f.ctx, eventlog.Drv, id("x"))
	if err != nil {
		t.Fatal(err)
	}
	intr := &eventsv1.Event{Id: "intr-x-1", Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{Kind: eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED, Attempt: 1}}}
	again := &eventsv1.Event{Id: "rebuild-x", Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "rebuild", NextAttempt: 2}}}
	// Both on the wire before the model can react to the interruption.
	_, errs, err := f.log.AppendMany(f.ctx, []eventlog.Item{
		{ID: id("x"), Event: intr, Expect: true, ExpectSeq: last},
		{ID: id("x"), Event: again, Expect: true, ExpectSeq: last + 1},
	})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("append: %v %v", err, errs)
	}
	f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "top": buildstate.Queued})
	f.build("x", true)
	f.expect(map[string]buildstate.State{"top": buildstate.Buildable})
}
