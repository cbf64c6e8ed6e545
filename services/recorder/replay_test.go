package recorder

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// shortWindow is the duplicate window of the streams these tests
// provision: a fact appended again with the same id after it lands as a
// new event, as a redelivery more than the production window later does.
const shortWindow = time.Second

// model is a recorder read model folding a test's log.
type model struct {
	ctx    context.Context
	log    *eventlog.Log
	runner *projection.Runner
	later  string // the jobset noConclusion checks
}

// setupWith starts a recorder read model over streams provisioned with o.
func setupWith(t *testing.T, o eventlog.StreamOptions) *model {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	log := eventlog.New(eventlogtest.JetStreamWith(t, ctx, o))
	db := projectiontest.OpenDB(t, "recorder.db")
	r, err := projection.New(db, log, NewConclusions(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &model{ctx: ctx, log: log, runner: r}
}

// caughtUp waits until the model has folded everything in the log; the
// decisions of those folds are appended before it returns.
func (m *model) caughtUp(t *testing.T) {
	t.Helper()
	last, err := m.log.LastSeq(m.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.runner.WaitFor(m.ctx, last); err != nil {
		t.Fatal(err)
	}
}

// append appends ev on aggregate id.
func (m *model) append(t *testing.T, id string, ev *eventsv1.Event) {
	t.Helper()
	appendEv(t, m.ctx, m.log, id, ev)
}

// appendAgain appends ev with the id it had before once the duplicate
// window has passed, so that it lands a second time.
func (m *model) appendAgain(t *testing.T, id string, ev *eventsv1.Event) {
	t.Helper()
	natstest.Eventually(t, 10*shortWindow, func() bool {
		a, err := m.log.Append(m.ctx, id, ev)
		if err != nil {
			t.Fatal(err)
		}
		return !a.Duplicate
	}, "the duplicate window passes for "+ev.GetId())
}

// facts lists the facts of an aggregate with the given name.
func (m *model) facts(t *testing.T, agg, id, fact string) []*eventsv1.Event {
	t.Helper()
	recs, _, err := m.log.Load(m.ctx, agg, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []*eventsv1.Event
	for _, r := range recs {
		if r.Fact == fact {
			out = append(out, r.Event)
		}
	}
	return out
}

// states lists a conclusion's results as attr=state.
func states(c *eventsv1.JobsetConcluded) string {
	var s []string
	for _, r := range c.GetResults() {
		s = append(s, r.GetAttr()+"="+r.GetState())
	}
	return strings.Join(s, " ")
}

// ev builders, for readable scenarios.
func configRead(id string, jobs ...string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: jobs}}}
}

func discovered(n string) *eventsv1.Event {
	return &eventsv1.Event{Id: "disc-" + n, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + did(n) + "-" + n + ".drv"}}}
}

func jattr(n string) *eventsv1.JobAttr {
	return &eventsv1.JobAttr{Attr: n, DrvId: did(n), DrvPath: "/nix/store/" + did(n) + "-" + n + ".drv", Difference: eventsv1.Difference_DIFFERENCE_NEW}
}

func evaluated(id, change string, attrs ...string) *eventsv1.Event {
	var as []*eventsv1.JobAttr
	for _, n := range attrs {
		as = append(as, jattr(n))
	}
	return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change, Attrs: as}}}
}

func created(id, change, job string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: change, Job: job}}}
}

func cached(n string) *eventsv1.Event {
	return &eventsv1.Event{Id: "cache-" + n, Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}}
}

func buildable(n string, attempt uint32) *eventsv1.Event {
	return &eventsv1.Event{Id: fmt.Sprintf("b-%s-%d", n, attempt), Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: attempt}}}
}

func started(n string, attempt uint32) *eventsv1.Event {
	return &eventsv1.Event{Id: fmt.Sprintf("s-%s-%d", n, attempt), Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: attempt}}}
}

func succeeded(n string, attempt uint32) *eventsv1.Event {
	return &eventsv1.Event{Id: fmt.Sprintf("ok-%s-%d", n, attempt), Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: attempt}}}
}

// TestRepeatedEvaluatedDoesNotConcludeEarly (review finding 1): a second
// jobset_evaluated for a jobset already evaluated — the same event after
// the duplicate window, or another id for the same evaluation — is not
// counted again, so the jobset does not conclude while one of its
// attributes is still building.
func TestRepeatedEvaluatedDoesNotConcludeEarly(t *testing.T) {
	tests := []struct {
		name  string
		again func(m *model, t *testing.T, job string, first *eventsv1.Event)
	}{
		{"another id", func(m *model, t *testing.T, job string, first *eventsv1.Event) {
			second := evaluated("evaluated-J-again", "c0ffee", "a", "b")
			m.append(t, job, second)
		}},
		{"the same id after the duplicate window", func(m *model, t *testing.T, job string, first *eventsv1.Event) {
			m.appendAgain(t, job, first)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := setupWith(t, eventlog.StreamOptions{DuplicateWindow: shortWindow})
			change := "c0ffee"
			job := eventlog.JobsetID(change, "j")
			m.append(t, change, configRead("cfg", "j"))
			m.append(t, did("a"), discovered("a"))
			m.append(t, did("b"), discovered("b"))
			first := evaluated("evaluated-J", change, "a", "b")
			m.append(t, job, first)
			tt.again(m, t, job, first)
			m.append(t, did("a"), cached("a"))
			m.append(t, did("b"), buildable("b", 1))
			m.append(t, did("b"), started("b", 1))
			m.caughtUp(t)
			if cs := m.facts(t, eventlog.Jobset, job, "concluded"); len(cs) > 0 {
				c := cs[0].GetJobsetConcluded()
				t.Fatalf("jobset concluded %v while b is still building: [%s]", c.GetConclusion(), states(c))
			}
			// And it concludes, once, when b does.
			m.append(t, did("b"), succeeded("b", 1))
			waitFact(t, m.ctx, m.log, eventlog.Jobset, job, "concluded")
			m.caughtUp(t)
			cs := m.facts(t, eventlog.Jobset, job, "concluded")
			if len(cs) != 1 || cs[0].GetJobsetConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS || states(cs[0].GetJobsetConcluded()) != "a=succeeded b=succeeded" {
				t.Fatalf("jobset concluded %d times: %v", len(cs), cs)
			}
		})
	}
}

// TestReplayedFactsConcludeOnce (review finding 1): after a change has
// concluded, every fact upstream of the recorder lands again after the
// duplicate window — jobset_created and jobset_evaluated (the review's
// case), a jobset_attrs_listed part, eval_failed, config_read,
// config_invalid, change_requested. Nothing is concluded a second time.
func TestReplayedFactsConcludeOnce(t *testing.T) {
	m := setupWith(t, eventlog.StreamOptions{DuplicateWindow: shortWindow})
	change := "c0ffee"
	job := eventlog.JobsetID(change, "j")
	req := &eventsv1.Event{Id: "requested", Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{}}}
	m.append(t, change, req)
	cfg := configRead("config-read", "j")
	m.append(t, change, cfg)
	m.append(t, did("a"), discovered("a"))
	cr := created("created-J", change, "j")
	m.append(t, job, cr)
	part := &eventsv1.Event{Id: "attrs-J-0", Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{ChangeId: change, Part: 0, Attrs: []*eventsv1.JobAttr{jattr("a")}}}}
	m.append(t, job, part)
	ev := &eventsv1.Event{Id: "evaluated-J", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change, AttrParts: 1, AttrCount: 1}}}
	m.append(t, job, ev)
	m.append(t, did("a"), cached("a"))
	waitFact(t, m.ctx, m.log, eventlog.Change, change, "concluded")

	replays := []struct {
		id string
		ev *eventsv1.Event
	}{
		{change, req},
		{job, cr},
		{job, part},
		{job, ev},
		{job, &eventsv1.Event{Id: "eval-failed-J", Payload: &eventsv1.Event_JobsetEvalFailed{JobsetEvalFailed: &eventsv1.JobsetEvalFailed{ChangeId: change, Error: "a second evaluation failed"}}}},
		{change, cfg},
		{change, &eventsv1.Event{Id: "config-invalid", Payload: &eventsv1.Event_ChangeConfigInvalid{ChangeConfigInvalid: &eventsv1.ChangeConfigInvalid{Error: "a second read refused it"}}}},
	}
	for _, r := range replays {
		// One at a time, each folded (and its decisions appended) before
		// the next: a later fact in the same batch would hide a decision
		// behind a failed guard.
		m.appendAgain(t, r.id, r.ev)
		m.caughtUp(t)
	}
	js := m.facts(t, eventlog.Jobset, job, "concluded")
	if len(js) != 1 {
		t.Errorf("jobset concluded %d times: %v", len(js), js)
	}
	if c := js[0].GetJobsetConcluded(); c.GetConclusion() != eventsv1.Conclusion_CONCLUSION_SUCCESS || states(c) != "a=succeeded" {
		t.Errorf("jobset concluded %v [%s], want success [a=succeeded]", c.GetConclusion(), states(c))
	}
	if ch := m.facts(t, eventlog.Change, change, "concluded"); len(ch) != 1 {
		t.Errorf("change concluded %d times: %v", len(ch), ch)
	}
}

// TestNeededAgainCountsOncePerJobset: a derivation interrupted for one
// jobset is re-queued ("needed-again", as ingress does) for a later one.
// The later jobset waits for it, through settled → unsettled → settled,
// counting it once (it names it twice), even when everything else it
// needs was settled before it was evaluated and the re-queue lands after
// its evaluation; a derivation that leaves its state otherwise (the
// re-queue did not come) is counted as it is. The jobset that already
// concluded keeps its conclusion.
func TestNeededAgainCountsOncePerJobset(t *testing.T) {
	requeue := &eventsv1.Event{Id: "needed-x", Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "needed-again", NextAttempt: 2}}}
	rebuild := func(m *model, t *testing.T) {
		m.append(t, did("x"), buildable("x", 2))
		m.append(t, did("x"), started("x", 2))
		m.append(t, did("x"), succeeded("x", 2))
	}
	tests := []struct {
		name string
		// before and after the later jobset's evaluation
		before, after func(m *model, t *testing.T)
		want          string
		conclusion    eventsv1.Conclusion
	}{
		{"re-queued before y settles", nil, func(m *model, t *testing.T) {
			m.append(t, did("x"), requeue)
			m.append(t, did("y"), cached("y"))
			m.caughtUp(t)
			m.noConclusion(t)
			rebuild(m, t)
		}, "x=succeeded x-again=succeeded y=succeeded", eventsv1.Conclusion_CONCLUSION_SUCCESS},
		{"y settled before the evaluation", func(m *model, t *testing.T) {
			m.append(t, did("y"), cached("y"))
		}, func(m *model, t *testing.T) {
			m.caughtUp(t)
			m.noConclusion(t)
			m.append(t, did("x"), requeue)
			m.caughtUp(t)
			m.noConclusion(t)
			rebuild(m, t)
		}, "x=succeeded x-again=succeeded y=succeeded", eventsv1.Conclusion_CONCLUSION_SUCCESS},
		{"interrupted again", func(m *model, t *testing.T) {
			m.append(t, did("y"), cached("y"))
		}, func(m *model, t *testing.T) {
			m.append(t, did("x"), requeue)
			m.append(t, did("x"), buildable("x", 2))
			m.append(t, did("x"), &eventsv1.Event{Id: "unsat-x-2", Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
				Kind: eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE, Attempt: 2}}})
		}, "x=interrupted x-again=interrupted y=succeeded", eventsv1.Conclusion_CONCLUSION_FAILURE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := setupWith(t, eventlog.StreamOptions{})
			first, later := eventlog.JobsetID("first", "j"), eventlog.JobsetID("later", "j")
			m.append(t, "first", configRead("cfg-first", "j"))
			m.append(t, did("x"), discovered("x"))
			m.append(t, first, evaluated("ev-first", "first", "x"))
			m.append(t, did("x"), buildable("x", 1))
			m.append(t, did("x"), &eventsv1.Event{Id: "unsat-x", Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
				Kind: eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE, Attempt: 1, Detail: "no builder for aarch64-linux"}}})
			c := waitFact(t, m.ctx, m.log, eventlog.Jobset, first, "concluded").GetJobsetConcluded()
			if c.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE || states(c) != "x=interrupted" {
				t.Fatalf("first jobset concluded %v [%s]", c.GetConclusion(), states(c))
			}

			m.append(t, "later", configRead("cfg-later", "j"))
			m.append(t, did("y"), discovered("y"))
			if tt.before != nil {
				tt.before(m, t)
			}
			twice := evaluated("ev-later", "later", "x", "y")
			again := jattr("x")
			again.Attr = "x-again"
			twice.GetJobsetEvaluated().Attrs = append(twice.GetJobsetEvaluated().Attrs, again)
			m.append(t, later, twice)
			m.later = later
			tt.after(m, t)
			c = waitFact(t, m.ctx, m.log, eventlog.Jobset, later, "concluded").GetJobsetConcluded()
			if c.GetConclusion() != tt.conclusion || states(c) != tt.want {
				t.Fatalf("later jobset concluded %v [%s], want %v [%s]", c.GetConclusion(), states(c), tt.conclusion, tt.want)
			}
			m.caughtUp(t)
			if cs := m.facts(t, eventlog.Jobset, first, "concluded"); len(cs) != 1 || cs[0].GetJobsetConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE {
				t.Fatalf("first jobset's conclusions: %v", cs)
			}
			if cs := m.facts(t, eventlog.Jobset, later, "concluded"); len(cs) != 1 {
				t.Fatalf("later jobset concluded %d times", len(cs))
			}
		})
	}
}

// noConclusion fails if the later jobset has concluded.
func (m *model) noConclusion(t *testing.T) {
	t.Helper()
	if cs := m.facts(t, eventlog.Jobset, m.later, "concluded"); len(cs) > 0 {
		t.Fatalf("later jobset concluded [%s] while x was to be built again", states(cs[0].GetJobsetConcluded()))
	}
}

// TestBlockedThatIsNotRequeuedIsCountedAsItIs: a jobset evaluated while
// its derivation is Blocked awaits the derivation's needed-again
// re-queue; when the derivation's next fact is another (its other input
// failed: transitive failure), the jobset counts it as that and concludes.
func TestBlockedThatIsNotRequeuedIsCountedAsItIs(t *testing.T) {
	m := setupWith(t, eventlog.StreamOptions{})
	job := eventlog.JobsetID("c", "j")
	m.append(t, "c", configRead("cfg", "j"))
	m.append(t, did("x"), discovered("x"))
	m.append(t, did("x"), &eventsv1.Event{Id: "blocked-x", Payload: &eventsv1.Event_DrvBlocked{DrvBlocked: &eventsv1.DrvBlocked{CauseDrvId: did("z"), CauseDrvPath: "/nix/store/z.drv"}}})
	m.append(t, job, evaluated("ev", "c", "x"))
	m.caughtUp(t)
	if cs := m.facts(t, eventlog.Jobset, job, "concluded"); len(cs) > 0 {
		t.Fatalf("concluded [%s] before x's re-queue or its next fact", states(cs[0].GetJobsetConcluded()))
	}
	m.append(t, did("x"), &eventsv1.Event{Id: "depfailed-x", Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{CauseDrvId: did("w"), CauseDrvPath: "/nix/store/w.drv"}}})
	c := waitFact(t, m.ctx, m.log, eventlog.Jobset, job, "concluded").GetJobsetConcluded()
	if c.GetConclusion() != eventsv1.Conclusion_CONCLUSION_FAILURE || states(c) != "x=transitive-failure" {
		t.Fatalf("concluded %v [%s]", c.GetConclusion(), states(c))
	}
}

// TestConclusionBehindARepeatLands: a repeated fact of a jobset lands
// after its conclusion was decided but before the conclusion was appended
// (all in one batch), so that append's guard fails; the conclusion decided
// is appended again behind the repeat, once.
func TestConclusionBehindARepeatLands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	change := "c0ffee"
	job := eventlog.JobsetID(change, "j")
	// Every fact first, the model after: it folds them in one batch.
	for _, e := range []struct {
		id string
		ev *eventsv1.Event
	}{
		{change, configRead("cfg", "j")},
		{did("a"), discovered("a")},
		{job, evaluated("evaluated-J", change, "a")},
		{did("a"), cached("a")},
		{job, evaluated("evaluated-J-again", change, "a")},
	} {
		appendEv(t, ctx, log, e.id, e.ev)
	}
	foldInto(t, ctx, log, filepath.Join(t.TempDir(), "recorder.db"), 0, change)
	recs, _, err := log.Load(ctx, eventlog.Jobset, job)
	if err != nil {
		t.Fatal(err)
	}
	var facts []string
	for _, r := range recs {
		facts = append(facts, r.Fact)
	}
	if got := strings.Join(facts, " "); got != "evaluated evaluated concluded" {
		t.Fatalf("jobset facts: %s", got)
	}
}
