package buildstate

import (
	"errors"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// TestDecideRetry: someone may retry a failed or interrupted derivation
// and nothing else; the requeue it decides is legal after that state,
// starts the next attempt and gives the automatic retry back.
func TestDecideRetry(t *testing.T) {
	actor := &eventsv1.Actor{Who: "alice", Source: "admin", Reason: "flaky runner"}
	for _, s := range AllStates {
		t.Run(s.String(), func(t *testing.T) {
			cur := reach(t, s)
			req, err := DecideRetry(cur, actor)
			retryable := s == Failed || s == Interrupted
			if !retryable {
				if !errors.Is(err, ErrNotRetryable) {
					t.Fatalf("DecideRetry(%s) = %v, %v; want ErrNotRetryable", s, req, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecideRetry(%s) = %v", s, err)
			}
			if req.GetReason() != ReasonRetried || req.GetNextAttempt() != cur.Attempt+1 || req.GetActor().GetWho() != "alice" {
				t.Fatalf("DecideRetry(%s) = %v, want reason %q, attempt %d, actor alice", s, req, ReasonRetried, cur.Attempt+1)
			}
			next, err := Next(cur, &eventsv1.Event{Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: req}})
			if err != nil {
				t.Fatalf("Next(%s, retried) = %v", s, err)
			}
			if next.State != Queued || next.RetryUsed {
				t.Fatalf("Next(%s, retried) = %+v, want queued with the retry available", s, next)
			}
		})
	}
}

// TestFailedStaysCached: after Failed, only a retry someone asked for
// queues the derivation again; the pipeline's own reasons are refused.
func TestFailedStaysCached(t *testing.T) {
	for _, reason := range []string{"retry", "cause-cleared", "needed-again", ""} {
		t.Run(reason, func(t *testing.T) {
			cur := reach(t, Failed)
			_, err := Next(cur, &eventsv1.Event{Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: reason, NextAttempt: cur.Attempt + 1}}})
			if !errors.Is(err, ErrIllegal) {
				t.Fatalf("Next(failed, requeued %q) = %v, want ErrIllegal", reason, err)
			}
		})
	}
}
