package recorder

import (
	"testing"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

var alice = &eventsv1.Actor{Who: "alice", Source: action.SourceAdmin, Reason: "superseded"}

func buildFailed(n string, attempt uint32) *eventsv1.Event {
	return &eventsv1.Event{Id: "f-" + n, Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: attempt, ExitCode: 1, LogTail: "boom"}}}
}

// TestCancelConcludesCancelled: a cancelled jobset concludes cancelled
// with what is still unsettled, its change concludes cancelled when
// nothing failed; a cancelled change concludes at once, and each of its
// jobsets, created or not yet, concludes cancelled.
func TestCancelConcludesCancelled(t *testing.T) {
	tests := []struct {
		name       string
		cancel     func(m *model, t *testing.T, change, jobA, jobB string) error
		wantA      eventsv1.Conclusion
		wantB      eventsv1.Conclusion // jobB is never created
		wantChange eventsv1.Conclusion
	}{
		{"cancel a jobset", func(m *model, t *testing.T, change, jobA, jobB string) error {
			_, err := action.CancelJobset(m.ctx, m.log, jobA, alice)
			return err
		}, eventsv1.Conclusion_CONCLUSION_CANCELLED, eventsv1.Conclusion_CONCLUSION_UNSPECIFIED, eventsv1.Conclusion_CONCLUSION_UNSPECIFIED},
		{"cancel the change", func(m *model, t *testing.T, change, jobA, jobB string) error {
			_, err := action.CancelChange(m.ctx, m.log, change, alice)
			return err
		}, eventsv1.Conclusion_CONCLUSION_CANCELLED, eventsv1.Conclusion_CONCLUSION_CANCELLED, eventsv1.Conclusion_CONCLUSION_CANCELLED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := setupWith(t, eventlog.StreamOptions{})
			change := "c0ffee"
			jobA, jobB := eventlog.JobsetID(change, "a"), eventlog.JobsetID(change, "b")
			m.append(t, change, configRead("cfg", "a", "b"))
			m.append(t, did("x"), discovered("x"))
			m.append(t, did("y"), discovered("y"))
			m.append(t, jobA, created("created-a", change, "a"))
			m.append(t, jobA, evaluated("evaluated-a", change, "x", "y"))
			m.append(t, did("x"), cached("x"))
			m.caughtUp(t)
			if err := tt.cancel(m, t, change, jobA, jobB); err != nil {
				t.Fatal(err)
			}
			// Asked again: nothing more lands.
			if err := tt.cancel(m, t, change, jobA, jobB); err != nil {
				t.Fatalf("asked again: %v", err)
			}
			m.caughtUp(t)
			m.caughtUp(t)
			a := waitFact(t, m.ctx, m.log, eventlog.Jobset, jobA, "concluded").GetJobsetConcluded()
			if a.GetConclusion() != tt.wantA || states(a) != "x=succeeded y=queued" {
				t.Fatalf("jobset a concluded %v (%s), want %v (x=succeeded y=queued)", a.GetConclusion(), states(a), tt.wantA)
			}
			if tt.wantB != eventsv1.Conclusion_CONCLUSION_UNSPECIFIED {
				b := waitFact(t, m.ctx, m.log, eventlog.Jobset, jobB, "concluded").GetJobsetConcluded()
				if b.GetConclusion() != tt.wantB {
					t.Fatalf("jobset b concluded %v, want %v", b.GetConclusion(), tt.wantB)
				}
				// The reader's creation of b, after the cancel, is refused.
				if _, err := m.log.Append(m.ctx, jobB, created("created-b", change, "b"), eventlog.ExpectLast(0)); err == nil {
					t.Fatal("jobset b was created after its change was cancelled")
				}
			}
			if tt.wantChange != eventsv1.Conclusion_CONCLUSION_UNSPECIFIED {
				ch := waitFact(t, m.ctx, m.log, eventlog.Change, change, "concluded").GetChangeConcluded()
				if ch.GetConclusion() != tt.wantChange || ch.GetSummary() != "cancelled by alice (admin): superseded" {
					t.Fatalf("change concluded %v %q", ch.GetConclusion(), ch.GetSummary())
				}
			}
			for _, agg := range []struct{ kind, id, fact string }{{eventlog.Jobset, jobA, "cancelled"}, {eventlog.Jobset, jobA, "concluded"}, {eventlog.Change, change, "concluded"}} {
				if n := len(m.facts(t, agg.kind, agg.id, agg.fact)); n > 1 {
					t.Errorf("%s %s has %d %s facts, want at most 1", agg.kind, agg.id, n, agg.fact)
				}
			}
		})
	}
}

// TestRestartConcludesAgain: a concluded jobset restarted concludes again
// under a new id once what ingress queued again settles, and so does its
// change; a jobset not concluded cannot be restarted.
func TestRestartConcludesAgain(t *testing.T) {
	m := setupWith(t, eventlog.StreamOptions{})
	change := "c0ffee"
	job := eventlog.JobsetID(change, "j")
	m.append(t, change, configRead("cfg", "j"))
	m.append(t, did("x"), discovered("x"))
	m.append(t, job, created("created-j", change, "j"))
	m.append(t, job, evaluated("evaluated-j", change, "x"))
	m.caughtUp(t)
	if _, err := action.Restart(m.ctx, m.log, job, alice); err == nil {
		t.Fatal("a jobset still building was restarted")
	}
	m.append(t, did("x"), buildable("x", 1))
	m.append(t, did("x"), started("x", 1))
	m.append(t, did("x"), buildFailed("x", 1))
	first := waitFact(t, m.ctx, m.log, eventlog.Change, change, "concluded").GetChangeConcluded()
	if first.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("change concluded %v, want failure", first.GetConclusion())
	}
	res, err := action.Restart(m.ctx, m.log, job, alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.runner.WaitFor(m.ctx, res.Seq); err != nil {
		t.Fatal(err)
	}
	// Ingress's part: x failed is queued again for the restart.
	if _, err := action.Retry(m.ctx, m.log, did("x"), alice); err != nil {
		t.Fatal(err)
	}
	m.caughtUp(t)
	if n := len(m.facts(t, eventlog.Jobset, job, "concluded")); n != 1 {
		t.Fatalf("the restarted jobset concluded again (%d conclusions) before x was built", n)
	}
	m.append(t, did("x"), buildable("x", 2))
	m.append(t, did("x"), started("x", 2))
	m.append(t, did("x"), succeeded("x", 2))
	var concl []*eventsv1.Event
	waitN := func(agg, id string) {
		t.Helper()
		for range 200 {
			m.caughtUp(t)
			if concl = m.facts(t, agg, id, "concluded"); len(concl) == 2 {
				return
			}
		}
		t.Fatalf("%s %s: %d conclusions, want 2", agg, id, len(concl))
	}
	waitN(eventlog.Jobset, job)
	if c := concl[1]; c.GetId() != eventlog.ConcludedAgainID(job, 1) || c.GetJobsetConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("second jobset conclusion %s %v, want %s success", c.GetId(), c.GetJobsetConcluded().GetConclusion(), eventlog.ConcludedAgainID(job, 1))
	}
	waitN(eventlog.Change, change)
	if c := concl[1]; c.GetId() != eventlog.ConcludedAgainID(change, 1) || c.GetChangeConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("second change conclusion %s %v, want success", c.GetId(), c.GetChangeConcluded().GetConclusion())
	}
}
