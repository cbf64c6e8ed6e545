package ingress_test

import (
	"testing"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/ingress"
)

var bob = &eventsv1.Actor{Who: "bob", Source: action.SourceAdmin, Reason: "runner fixed"}

// created appends a jobset's creation, as the reader does.
func (f *fixture) created(jobset string) {
	f.t.Helper()
	ev := &eventsv1.Event{Id: "created-" + jobset, Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: "c", Job: jobset}}}
	if _, err := f.log.Append(f.ctx, jobset, ev, eventlog.ExpectLast(0)); err != nil {
		f.t.Fatal(err)
	}
}

// concluded appends a jobset's conclusion, as the recorder does.
func (f *fixture) concluded(jobset string) {
	f.t.Helper()
	ev := &eventsv1.Event{Id: "concluded-" + jobset + "-test", Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{ChangeId: "c"}}}
	if _, err := f.log.Append(f.ctx, jobset, ev); err != nil {
		f.t.Fatal(err)
	}
}

// TestRetryTakesTransitiveFailuresAlong: a failure someone retries is
// built again and the derivations that failed with it follow it (whether
// their verdicts were one fact each or one downstream_failed), building
// once it succeeds; an interrupted one takes what it blocked along.
func TestRetryTakesTransitiveFailuresAlong(t *testing.T) {
	tests := []struct {
		name string
		lim  ingress.Limits
	}{
		{"one dependency_failed each", ingress.Limits{}},
		{"one downstream_failed", ingress.Limits{BatchOver: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, tt.lim)
			f.discover("bad", false)
			f.discover("mid", false, "bad")
			f.discover("top", false, "mid")
			f.build("bad", false)
			f.expect(map[string]buildstate.State{"bad": buildstate.Failed, "mid": buildstate.TransitiveFailure, "top": buildstate.TransitiveFailure})
			if _, err := action.Retry(f.ctx, f.log, id("mid"), bob); err == nil {
				t.Fatal("a transitive failure was retried itself")
			}
			if _, err := action.Retry(f.ctx, f.log, id("bad"), bob); err != nil {
				t.Fatal(err)
			}
			f.expect(map[string]buildstate.State{"bad": buildstate.Buildable, "mid": buildstate.Queued, "top": buildstate.Queued})
			f.build("bad", true)
			f.expect(map[string]buildstate.State{"mid": buildstate.Buildable, "top": buildstate.Queued})
			f.build("mid", true)
			f.build("top", true)
			f.expect(map[string]buildstate.State{"top": buildstate.Succeeded})
		})
	}
	t.Run("interrupted", func(t *testing.T) {
		f := newFixture(t)
		f.discover("x", false)
		f.discover("top", false, "x")
		f.interrupt("x", eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT)
		f.expect(map[string]buildstate.State{"x": buildstate.Interrupted, "top": buildstate.Blocked})
		if _, err := action.Retry(f.ctx, f.log, id("x"), bob); err != nil {
			t.Fatal(err)
		}
		f.expect(map[string]buildstate.State{"x": buildstate.Buildable, "top": buildstate.Queued})
	})
}

// TestCancelStopsOnlyWhatNoOneElseNeeds: cancelling a jobset interrupts
// (cancelled) the unsettled derivations only it needs; what another live
// jobset needs stays queued, and a cancelled derivation a later jobset
// needs is queued again. A jobset cancelled before its evaluation is
// recorded cancels what it lists when it is.
func TestCancelStopsOnlyWhatNoOneElseNeeds(t *testing.T) {
	f := newFixture(t)
	f.discover("dep", false) // needed by both jobsets, through shared
	f.discover("shared", false, "dep")
	f.discover("own", false, "dep") // only js1's
	f.discover("own2", false)       // only js1's, buildable
	f.created("js1")
	f.evaluate("js1", []string{"shared", "own", "own2"})
	f.created("js2")
	f.evaluate("js2", []string{"shared"})
	f.expect(map[string]buildstate.State{"dep": buildstate.Buildable, "own2": buildstate.Buildable, "own": buildstate.Queued})
	if _, err := action.CancelJobset(f.ctx, f.log, "js1", bob); err != nil {
		t.Fatal(err)
	}
	f.expect(map[string]buildstate.State{"dep": buildstate.Buildable, "shared": buildstate.Queued, "own": buildstate.Interrupted, "own2": buildstate.Interrupted})
	if k := f.state("own").Interruption; k != eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED {
		t.Fatalf("own interrupted %v, want cancelled", k)
	}
	recs, _, err := f.log.Load(f.ctx, eventlog.Drv, id("own2"))
	if err != nil {
		t.Fatal(err)
	}
	if a := recs[len(recs)-1].Event.GetDrvInterrupted().GetActor(); a.GetWho() != "bob" {
		t.Fatalf("own2's interruption names %v, want bob", a)
	}

	// Once js2 concluded, cancelling js3 stops what js2 needed too.
	f.concluded("js2")
	f.created("js3")
	if _, err := action.CancelJobset(f.ctx, f.log, "js3", bob); err != nil {
		t.Fatal(err)
	}
	f.evaluate("js3", []string{"shared"})
	f.expect(map[string]buildstate.State{"shared": buildstate.Interrupted, "dep": buildstate.Interrupted})

	// A later jobset needing them queues them again.
	f.created("js4")
	f.evaluate("js4", []string{"own"})
	f.expect(map[string]buildstate.State{"dep": buildstate.Buildable, "own": buildstate.Queued})
}

// TestRestartQueuesFailuresAgain: restarting a concluded jobset queues
// again the failed and interrupted derivations it needs, their transitive
// failures and blocks following; a failure it does not need stays.
func TestRestartQueuesFailuresAgain(t *testing.T) {
	f := newFixture(t)
	f.discover("bad", false)
	f.discover("usesBad", false, "bad")
	f.discover("slow", false)
	f.discover("other", false) // failed, not in the jobset
	f.created("js")
	f.evaluate("js", []string{"usesBad", "slow"})
	f.build("bad", false)
	f.build("other", false)
	f.interrupt("slow", eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT)
	f.expect(map[string]buildstate.State{"usesBad": buildstate.TransitiveFailure, "slow": buildstate.Interrupted, "other": buildstate.Failed})
	f.concluded("js")
	res, err := action.Restart(f.ctx, f.log, "js", bob)
	if err != nil {
		t.Fatal(err)
	}
	f.expect(map[string]buildstate.State{"bad": buildstate.Buildable, "usesBad": buildstate.Queued, "slow": buildstate.Buildable, "other": buildstate.Failed})
	if got := f.requeues("bad"); len(got) != 1 || got[0] != buildstate.ReasonRetried {
		t.Fatalf("bad requeued for %v, want [retried]", got)
	}
	// Asked again in the same round: the same fact, nothing new.
	if _, err := action.Restart(f.ctx, f.log, "js", bob); err == nil {
		t.Fatal("a jobset not concluded since its restart was restarted again")
	}
	if res.Seq == 0 {
		t.Fatal("restart returned no sequence")
	}
}
