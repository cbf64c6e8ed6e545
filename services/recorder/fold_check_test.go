package recorder

import (
	"testing"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// TestChecksInTheConclusion: a change concludes once every check ended; a
// check that did not pass fails it unless the base did not pass it either.
// Each row ends its first check before its last: a change concluded early
// (without the last check) would read as success where a row wants failure.
func TestChecksInTheConclusion(t *testing.T) {
	ctx, log := setup(t)
	ended := func(change, name string, how string) *eventsv1.Event {
		id := eventlog.CheckEndedID(eventlog.CheckID(change, name))
		switch how {
		case "passed":
			return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_CheckSucceeded{CheckSucceeded: &eventsv1.CheckSucceeded{ChangeId: change, Name: name, Attempt: 1}}}
		case "failed":
			return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{ChangeId: change, Name: name, Attempt: 1}}}
		case "failed on base too":
			return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{ChangeId: change, Name: name, Attempt: 1, BaseFailed: true}}}
		case "timed out":
			return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{ChangeId: change, Name: name, Attempt: 1, Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT}}}
		case "timed out on base too":
			return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{ChangeId: change, Name: name, Attempt: 1, Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT, BaseFailed: true}}}
		}
		t.Fatalf("no such ending %q", how)
		return nil
	}
	for i, tc := range []struct {
		name        string
		first, last string
		// endedFirst ends the first check before the change's config_read.
		endedFirst bool
		want       eventsv1.Conclusion
		summary    string
	}{
		{"both pass", "passed", "passed", false, eventsv1.Conclusion_CONCLUSION_SUCCESS, "0 of 0 jobs failed, 0 of 2 checks failed"},
		{"the last fails", "passed", "failed", false, eventsv1.Conclusion_CONCLUSION_FAILURE, "0 of 0 jobs failed, 1 of 2 checks failed"},
		{"fails on the base too", "passed", "failed on base too", false, eventsv1.Conclusion_CONCLUSION_SUCCESS, "0 of 0 jobs failed, 0 of 2 checks failed"},
		{"a limit is a failure", "passed", "timed out", false, eventsv1.Conclusion_CONCLUSION_FAILURE, "0 of 0 jobs failed, 1 of 2 checks failed"},
		{"a limit on the base too", "passed", "timed out on base too", false, eventsv1.Conclusion_CONCLUSION_SUCCESS, "0 of 0 jobs failed, 0 of 2 checks failed"},
		{"ended before config_read", "failed", "passed", true, eventsv1.Conclusion_CONCLUSION_FAILURE, "0 of 0 jobs failed, 1 of 2 checks failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			change := "c0ffee" + string(rune('a'+i))
			first, last := eventlog.CheckID(change, "first"), eventlog.CheckID(change, "last")
			if tc.endedFirst {
				appendEv(t, ctx, log, first, ended(change, "first", tc.first))
			}
			appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg-" + change, Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{
				Configured: true, Checks: []string{"first", "last"}}}})
			if !tc.endedFirst {
				appendEv(t, ctx, log, first, ended(change, "first", tc.first))
			}
			appendEv(t, ctx, log, last, ended(change, "last", tc.last))
			// Another ending (a replay past the duplicate window) changes
			// nothing.
			again := ended(change, "last", "passed")
			again.Id += "-again"
			appendEv(t, ctx, log, last, again)
			got := waitFact(t, ctx, log, eventlog.Change, change, "concluded").GetChangeConcluded()
			if got.GetConclusion() != tc.want || got.GetSummary() != tc.summary || len(got.GetCheckIds()) != 2 || got.GetCheckIds()[0] != first {
				t.Errorf("change concluded %v %q %v, want %v %q [%s %s]", got.GetConclusion(), got.GetSummary(), got.GetCheckIds(), tc.want, tc.summary, first, last)
			}
		})
	}
}
