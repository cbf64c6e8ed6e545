package action_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// TestRefusals: every action says what is wrong: a malformed id or actor
// (ErrInvalid), nothing in the log (ErrNotFound), a state the action does
// not apply to (ErrState); asked twice, a retry appends once.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	ok := &eventsv1.Actor{Who: "carol", Source: action.SourceAdmin}
	const drv, queued, jobset, change = "0000000000000000000000000000000d", "0000000000000000000000000000000q", "js", "ch"
	put := func(id string, ev *eventsv1.Event) {
		t.Helper()
		if _, err := log.Append(ctx, id, ev); err != nil {
			t.Fatal(err)
		}
	}
	put(drv, &eventsv1.Event{Id: "d1", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{}}})
	put(drv, &eventsv1.Event{Id: "d2", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}})
	put(drv, &eventsv1.Event{Id: "d3", Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}})
	put(drv, &eventsv1.Event{Id: "d4", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1}}})
	put(queued, &eventsv1.Event{Id: "q1", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{}}})
	put(jobset, &eventsv1.Event{Id: "j1", Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: change}}})
	put(jobset, &eventsv1.Event{Id: "j2", Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{ChangeId: change}}})
	put(change, &eventsv1.Event{Id: "c1", Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{}}})
	put(change, &eventsv1.Event{Id: "c2", Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{}}})

	tests := []struct {
		name string
		do   func() (action.Result, error)
		want error
	}{
		{"retry, no actor", func() (action.Result, error) { return action.Retry(ctx, log, drv, nil) }, action.ErrInvalid},
		{"retry, unknown source", func() (action.Result, error) {
			return action.Retry(ctx, log, drv, &eventsv1.Actor{Who: "x", Source: "email"})
		}, action.ErrInvalid},
		{"retry, id with a dot", func() (action.Result, error) { return action.Retry(ctx, log, "a.b", ok) }, action.ErrInvalid},
		{"retry, unknown derivation", func() (action.Result, error) { return action.Retry(ctx, log, "nothere", ok) }, action.ErrNotFound},
		{"retry, queued", func() (action.Result, error) { return action.Retry(ctx, log, queued, ok) }, action.ErrState},
		{"cancel jobset, unknown", func() (action.Result, error) { return action.CancelJobset(ctx, log, "nothere", ok) }, action.ErrNotFound},
		{"cancel jobset, concluded", func() (action.Result, error) { return action.CancelJobset(ctx, log, jobset, ok) }, action.ErrState},
		{"cancel change, unknown", func() (action.Result, error) { return action.CancelChange(ctx, log, "nothere", ok) }, action.ErrNotFound},
		{"cancel change, concluded", func() (action.Result, error) { return action.CancelChange(ctx, log, change, ok) }, action.ErrState},
		{"restart, unknown", func() (action.Result, error) { return action.Restart(ctx, log, "nothere", ok) }, action.ErrNotFound},
		{"retry, failed", func() (action.Result, error) { return action.Retry(ctx, log, drv, ok) }, nil},
		{"retry, failed, asked again", func() (action.Result, error) { return action.Retry(ctx, log, drv, ok) }, action.ErrState},
		{"restart, concluded", func() (action.Result, error) { return action.Restart(ctx, log, jobset, ok) }, nil},
		{"approve, not a login", func() (action.Result, error) { return action.Approve(ctx, log, "a.b", ok) }, action.ErrInvalid},
		{"approve, no actor", func() (action.Result, error) { return action.Approve(ctx, log, "octocat", nil) }, action.ErrInvalid},
		{"revoke, never approved", func() (action.Result, error) { return action.Revoke(ctx, log, "octocat", ok) }, action.ErrNotFound},
		{"drain, no name", func() (action.Result, error) { return action.Drain(ctx, log, "", ok) }, action.ErrInvalid},
		{"resume, not drained", func() (action.Result, error) { return action.Resume(ctx, log, "local", ok) }, action.ErrState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.do()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && res.Seq == 0 {
				t.Fatal("no sequence returned")
			}
		})
	}
	recs, _, err := log.Load(ctx, eventlog.Drv, drv)
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1].Event
	if q := last.GetDrvRequeued(); q.GetReason() != "retried" || q.GetActor().GetWho() != "carol" || last.GetId() != eventlog.RetriedID(drv, 2) {
		t.Fatalf("last fact on the retried derivation: %v", last)
	}
}

// TestApprovalsAndDrains: approvals and drains fold from their facts, a
// repeat answers Already with the fact that did it, and a login is the
// same in any case.
func TestApprovalsAndDrains(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	ok := &eventsv1.Actor{Who: "carol", Source: action.SourceAdmin, Reason: "known"}
	steps := []struct {
		name         string
		do           func() (action.Result, error)
		already      bool
		approved     bool // OctoCat's approval after the step
		drained      bool // builder b1's drain after the step
		approvedSeqs int  // facts on the contributor after the step
	}{
		{"approve", func() (action.Result, error) { return action.Approve(ctx, log, "OctoCat", ok) }, false, true, false, 1},
		{"approve again, other case", func() (action.Result, error) { return action.Approve(ctx, log, "octocat", ok) }, true, true, false, 1},
		{"drain", func() (action.Result, error) { return action.Drain(ctx, log, "b1", ok) }, false, true, true, 1},
		{"drain again", func() (action.Result, error) { return action.Drain(ctx, log, "b1", ok) }, true, true, true, 1},
		{"revoke", func() (action.Result, error) { return action.Revoke(ctx, log, "octocat", ok) }, false, false, true, 2},
		{"revoke again", func() (action.Result, error) { return action.Revoke(ctx, log, "OCTOCAT", ok) }, true, false, true, 2},
		{"resume", func() (action.Result, error) { return action.Resume(ctx, log, "b1", ok) }, false, false, false, 2},
		{"approve after a revoke", func() (action.Result, error) { return action.Approve(ctx, log, "octocat", ok) }, false, true, false, 3},
	}
	for _, s := range steps {
		res, err := s.do()
		if err != nil || res.Already != s.already || res.Seq == 0 {
			t.Fatalf("%s: %+v, %v; want already %v and a sequence", s.name, res, err, s.already)
		}
		c, _, err := action.LoadContributor(ctx, log, "octocat")
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := action.LoadBuilder(ctx, log, "b1")
		if err != nil {
			t.Fatal(err)
		}
		if c.Approved != s.approved || c.Facts != s.approvedSeqs || b.Drained != s.drained {
			t.Fatalf("after %s: approved %v (%d facts), drained %v; want %v (%d), %v", s.name, c.Approved, c.Facts, b.Drained, s.approved, s.approvedSeqs, s.drained)
		}
		if c.Actor.GetWho() != "carol" || c.Seq == 0 {
			t.Fatalf("after %s: contributor %+v, want carol's fact", s.name, c)
		}
	}
}
