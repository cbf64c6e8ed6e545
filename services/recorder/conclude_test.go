package recorder

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

func setup(t *testing.T) (context.Context, *eventlog.Log) {
	t.Helper()
	m := setupWith(t, eventlog.StreamOptions{})
	return m.ctx, m.log
}

func did(name string) string { return fmt.Sprintf("%032s", name) }

func appendEv(t *testing.T, ctx context.Context, log *eventlog.Log, id string, ev *eventsv1.Event) {
	t.Helper()
	if _, err := log.Append(ctx, id, ev); err != nil {
		t.Fatal(err)
	}
}

// waitFact returns the first fact of the aggregate with the given name.
func waitFact(t *testing.T, ctx context.Context, log *eventlog.Log, agg, id, fact string) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	natstest.Eventually(t, 10*time.Second, func() bool {
		recs, _, err := log.Load(ctx, agg, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Fact == fact {
				found = r.Event
				return true
			}
		}
		return false
	}, fmt.Sprintf("%s %s gets %s", agg, id, fact))
	return found
}

func TestJobsetAndChangeConclude(t *testing.T) {
	ctx, log := setup(t)
	change := "c0ffee"
	okJob, badJob := eventlog.JobsetID(change, "ok"), eventlog.JobsetID(change, "bad")
	appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"ok", "bad"}}}})
	for _, n := range []string{"a", "b", "c"} {
		appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "disc-" + n, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + did(n) + "-" + n + ".drv"}}})
	}
	attr := func(name, drv string, diff eventsv1.Difference) *eventsv1.JobAttr {
		return &eventsv1.JobAttr{Attr: name, DrvId: did(drv), DrvPath: "/nix/store/" + did(drv) + "-" + drv + ".drv", Difference: diff}
	}
	appendEv(t, ctx, log, okJob, &eventsv1.Event{Id: "ev-ok", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change,
		Attrs: []*eventsv1.JobAttr{attr("a", "a", eventsv1.Difference_DIFFERENCE_NEW), attr("same-a", "a", eventsv1.Difference_DIFFERENCE_NEW), attr("c", "c", eventsv1.Difference_DIFFERENCE_UNCHANGED)}}}})
	appendEv(t, ctx, log, badJob, &eventsv1.Event{Id: "ev-bad", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change,
		Attrs: []*eventsv1.JobAttr{attr("b", "b", eventsv1.Difference_DIFFERENCE_CHANGED), {Attr: "broken", EvalError: "undefined variable"}}}}})

	// Settle: a succeeds, c (unchanged) fails — it must not fail "ok" — b fails.
	settle := func(n string, ok bool) {
		var ev *eventsv1.Event
		if ok {
			ev = &eventsv1.Event{Id: "cache-" + n, Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}}
		} else {
			appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "b-" + n, Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}})
			appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "s-" + n, Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}})
			ev = &eventsv1.Event{Id: "f-" + n, Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1, ExitCode: 1, LogTail: "boom"}}}
		}
		appendEv(t, ctx, log, did(n), ev)
	}
	settle("a", true)
	settle("c", false)
	concl := waitFact(t, ctx, log, eventlog.Jobset, okJob, "concluded").GetJobsetConcluded()
	if concl.GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS || len(concl.GetResults()) != 3 {
		t.Fatalf("ok job concluded %v with %d results, want success with 3", concl.GetConclusion(), len(concl.GetResults()))
	}
	settle("b", false)
	bad := waitFact(t, ctx, log, eventlog.Jobset, badJob, "concluded").GetJobsetConcluded()
	if bad.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("bad job concluded %v, want failure", bad.GetConclusion())
	}
	var states []string
	for _, r := range bad.GetResults() {
		states = append(states, r.GetAttr()+"="+r.GetState())
	}
	if fmt.Sprint(states) != "[b=failed broken=eval-error]" {
		t.Fatalf("bad job results = %v", states)
	}
	ch := waitFact(t, ctx, log, eventlog.Change, change, "concluded").GetChangeConcluded()
	if ch.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE || len(ch.GetJobsetIds()) != 2 {
		t.Fatalf("change concluded %v over %v", ch.GetConclusion(), ch.GetJobsetIds())
	}
}

func TestNothingToBuildConcludesAtOnce(t *testing.T) {
	ctx, log := setup(t)
	change := "empty"
	js := eventlog.JobsetID(change, "j")
	appendEv(t, ctx, log, js, &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change}}})
	appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"j"}}}})
	if c := waitFact(t, ctx, log, eventlog.Change, change, "concluded").GetChangeConcluded(); c.GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("empty change concluded %v", c.GetConclusion())
	}
	unconfigured := "unconfigured"
	appendEv(t, ctx, log, unconfigured, &eventsv1.Event{Id: "cfg2", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: false}}})
	if c := waitFact(t, ctx, log, eventlog.Change, unconfigured, "concluded").GetChangeConcluded(); c.GetConclusion() != eventsv1.Conclusion_CONCLUSION_NEUTRAL {
		t.Fatalf("unconfigured change concluded %v, want neutral", c.GetConclusion())
	}
}

// TestReportsDecideRetryThenFailure drives the report handler: a first
// failure is retried once, the second is final.
func TestReportsDecideRetryThenFailure(t *testing.T) {
	ctx, log := setup(t)
	rep := &reports{log: log, logger: zerolog.Nop()}
	id := did("flaky")
	appendEv(t, ctx, log, id, &eventsv1.Event{Id: "d", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + id + "-flaky.drv"}}})
	for attempt := uint32(1); attempt <= 2; attempt++ {
		appendEv(t, ctx, log, id, &eventsv1.Event{Id: fmt.Sprint("b", attempt), Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: attempt}}})
		appendEv(t, ctx, log, id, &eventsv1.Event{Id: fmt.Sprint("s", attempt), Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: attempt}}})
		r := &workv1.BuildReport{DrvId: id, Attempt: attempt, Outcome: workv1.BuildOutcome_BUILD_OUTCOME_FAILED, ExitCode: 1, LogTail: "boom"}
		if err := rep.record(ctx, r); err != nil {
			t.Fatal(err)
		}
		// A duplicate report changes nothing.
		if err := rep.record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	recs, _, err := log.Load(ctx, eventlog.Drv, id)
	if err != nil {
		t.Fatal(err)
	}
	var facts []string
	for _, r := range recs {
		facts = append(facts, r.Fact)
	}
	want := "[discovered buildable build_started build_failed_retry requeued buildable build_started build_failed]"
	if fmt.Sprint(facts) != want {
		t.Fatalf("history = %v\nwant      %s", facts, want)
	}
}

// TestDownstreamFailedSettlesEveryListedDerivation: one downstream_failed
// fact on a failed derivation settles each derivation it lists as a
// transitive failure naming it, and the jobset watching them concludes.
func TestDownstreamFailedSettlesEveryListedDerivation(t *testing.T) {
	ctx, log := setup(t)
	change := "d0wn"
	job := eventlog.JobsetID(change, "j")
	appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"j"}}}})
	for _, n := range []string{"root", "x", "y"} {
		appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "disc-" + n, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + did(n) + "-" + n + ".drv"}}})
	}
	var attrs []*eventsv1.JobAttr
	for _, n := range []string{"x", "y"} {
		attrs = append(attrs, &eventsv1.JobAttr{Attr: n, DrvId: did(n), DrvPath: "/nix/store/" + did(n) + "-" + n + ".drv", Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	appendEv(t, ctx, log, job, &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change, Attrs: attrs}}})
	root := did("root")
	appendEv(t, ctx, log, root, &eventsv1.Event{Id: "b", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}})
	appendEv(t, ctx, log, root, &eventsv1.Event{Id: "s", Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}})
	appendEv(t, ctx, log, root, &eventsv1.Event{Id: "f", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1, ExitCode: 1}}})
	appendEv(t, ctx, log, root, &eventsv1.Event{Id: "down", Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: &eventsv1.DrvDownstreamFailed{
		CauseDrvPath: "/nix/store/" + root + "-root.drv", DrvIds: []string{did("x"), did("y")},
	}}})
	concl := waitFact(t, ctx, log, eventlog.Jobset, job, "concluded").GetJobsetConcluded()
	if concl.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE || len(concl.GetResults()) != 2 {
		t.Fatalf("concluded %v with %d results, want failure with 2", concl.GetConclusion(), len(concl.GetResults()))
	}
	for _, r := range concl.GetResults() {
		if r.GetState() != "transitive-failure" || r.GetCause() != "/nix/store/"+root+"-root.drv" {
			t.Errorf("%s: state %s, cause %q", r.GetAttr(), r.GetState(), r.GetCause())
		}
	}
}

// TestLargeJobsetConclusionListsFailuresFirst: a jobset whose results do
// not fit the budget lists the failures that decide the verdict first,
// then the other failures, then as many successes as fit, says how many it
// left out, and counts every attribute by state.
func TestLargeJobsetConclusionListsFailuresFirst(t *testing.T) {
	db := projectiontest.OpenDB(t, "recorder.db")
	c := NewConclusions(zerolog.Nop()).WithResultBudget(2000)
	if err := db.Update(c.Init); err != nil {
		t.Fatal(err)
	}
	const n = 60
	jobset := eventlog.JobsetID("big", "j")
	var recs []eventlog.Record
	var attrs []*eventsv1.JobAttr
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	failing := map[int]eventsv1.Difference{7: eventsv1.Difference_DIFFERENCE_NEW, 41: eventsv1.Difference_DIFFERENCE_CHANGED, 23: eventsv1.Difference_DIFFERENCE_UNCHANGED}
	for i := range n {
		id := did(fmt.Sprint("d", i))
		diff := eventsv1.Difference_DIFFERENCE_NEW
		if d, ok := failing[i]; ok {
			diff = d
		}
		recs = append(recs, drvRec(next(), id, &eventsv1.Event{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + id + ".drv"}}}))
		attrs = append(attrs, &eventsv1.JobAttr{Attr: fmt.Sprintf("a%02d", i), DrvId: id, DrvPath: "/nix/store/" + id + ".drv", Difference: diff})
	}
	recs = append(recs, eventlog.Record{Seq: next(), Aggregate: eventlog.Jobset, ID: jobset, Fact: "evaluated",
		Event: &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: "big", Attrs: attrs}}}})
	for i, a := range attrs {
		if _, ok := failing[i]; ok {
			for _, ev := range []*eventsv1.Event{
				{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}},
				{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}},
				{Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1, ExitCode: 1, LogTail: "boom"}}},
			} {
				recs = append(recs, drvRec(next(), a.GetDrvId(), ev))
			}
			continue
		}
		recs = append(recs, drvRec(next(), a.GetDrvId(), &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}}))
	}
	out := &projection.Decisions{}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, rec := range recs {
			if err := c.Apply(tx, rec, out); err != nil {
				return err
			}
		}
		return c.Flush(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Len() != 1 {
		t.Fatalf("%d decisions, want the conclusion", out.Len())
	}
	concl := out.Event(0).GetJobsetConcluded()
	if concl.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("conclusion %v", concl.GetConclusion())
	}
	listed := map[string]string{}
	var order []string
	for _, r := range concl.GetResults() {
		listed[r.GetAttr()] = r.GetState()
		order = append(order, r.GetAttr())
	}
	for _, a := range []string{"a07", "a23", "a41"} {
		if listed[a] != "failed" {
			t.Errorf("%s not listed as failed: %v", a, listed)
		}
	}
	if len(listed) == n || concl.GetResultsOmitted() == 0 || len(listed)+int(concl.GetResultsOmitted()) != n {
		t.Fatalf("listed %d, omitted %d, of %d", len(listed), concl.GetResultsOmitted(), n)
	}
	if !sort.StringsAreSorted(order) {
		t.Fatalf("results not sorted by attr: %v", order)
	}
	if got := concl.GetCounts(); got["failed"] != 3 || got["succeeded"] != n-3 {
		t.Fatalf("counts %v", got)
	}
	b, err := protojson.Marshal(concl)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 2000+512 {
		t.Fatalf("conclusion is %d bytes of JSON, budget 2000", len(b))
	}
}

// TestJobsetListedInParts: a job whose attributes came in
// jobset_attrs_listed parts before its jobset_evaluated concludes over all
// of them.
func TestJobsetListedInParts(t *testing.T) {
	ctx, log := setup(t)
	change := "parts"
	job := eventlog.JobsetID(change, "j")
	appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"j"}}}})
	var attrs []*eventsv1.JobAttr
	for i := range 5 {
		n := fmt.Sprint("p", i)
		appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "disc-" + n, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + did(n) + ".drv"}}})
		attrs = append(attrs, &eventsv1.JobAttr{Attr: n, DrvId: did(n), DrvPath: "/nix/store/" + did(n) + ".drv", Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	appendEv(t, ctx, log, job, &eventsv1.Event{Id: "part0", Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{ChangeId: change, Part: 0, Attrs: attrs[:2]}}})
	appendEv(t, ctx, log, job, &eventsv1.Event{Id: "part1", Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{ChangeId: change, Part: 1, Attrs: attrs[2:4]}}})
	appendEv(t, ctx, log, job, &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: change, Attrs: attrs[4:], AttrParts: 2, AttrCount: 5}}})
	// Four of five settle: no conclusion yet.
	for i := range 4 {
		n := fmt.Sprint("p", i)
		appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "ok-" + n, Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}})
	}
	time.Sleep(300 * time.Millisecond)
	if recs, _, err := log.Load(ctx, eventlog.Jobset, job); err != nil {
		t.Fatal(err)
	} else {
		for _, r := range recs {
			if r.Fact == "concluded" {
				t.Fatal("concluded before its last attribute settled")
			}
		}
	}
	appendEv(t, ctx, log, did("p4"), &eventsv1.Event{Id: "ok-p4", Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}})
	concl := waitFact(t, ctx, log, eventlog.Jobset, job, "concluded").GetJobsetConcluded()
	if concl.GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS || len(concl.GetResults()) != 5 || concl.GetCounts()["succeeded"] != 5 {
		t.Fatalf("concluded %v with %d results, counts %v", concl.GetConclusion(), len(concl.GetResults()), concl.GetCounts())
	}
}
