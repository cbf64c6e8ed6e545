package builder

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/service"
)

// heartbeatOf returns the heartbeat of the live process named name.
func (h *harness) heartbeatOf(name string) (heartbeat, bool) {
	h.t.Helper()
	kv, err := h.js.KeyValue(h.ctx, HoldersBucket)
	if err != nil {
		return heartbeat{}, false
	}
	keys, err := kv.ListKeys(h.ctx)
	if err != nil {
		return heartbeat{}, false
	}
	for k := range keys.Keys() {
		e, err := kv.Get(h.ctx, k)
		if err != nil {
			continue
		}
		var hb heartbeat
		if json.Unmarshal(e.Value(), &hb) == nil && hb.Builder == name {
			return hb, true
		}
	}
	return heartbeat{}, false
}

// startedBy returns which builder recorded drv's build_started, and at
// which sequence.
func (h *harness) startedBy(id string) (string, uint64) {
	h.t.Helper()
	_, history := h.state(id)
	for _, r := range history {
		if s := r.Event.GetDrvBuildStarted(); s != nil {
			return s.GetBuilder(), r.Seq
		}
	}
	return "", 0
}

func (h *harness) outcomeOf(id string) workv1.BuildOutcome {
	for _, r := range h.got() {
		if r.rep.GetDrvId() == id {
			return r.rep.GetOutcome()
		}
	}
	return workv1.BuildOutcome_BUILD_OUTCOME_UNSPECIFIED
}

// TestDrainAndResume, on a real JetStream with real Nix builds and two
// builders of one pool: a build running when its builder is drained goes
// on to succeed; while "a" is drained, every request goes to "b"; with
// both drained, a request waits, and is built by "a" after its resume (its
// build_started comes after builder_resumed in the log); a builder
// started while drained takes nothing until resumed.
func TestDrainAndResume(t *testing.T) {
	h := newHarness(t)
	op := &eventsv1.Actor{Who: "unix:carol", Source: action.SourceAdmin, Reason: "maintenance"}
	markers, err := os.MkdirTemp("", "ekaci-drain-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil { // Nix's build users wait for the marker
		t.Fatal(err)
	}
	marker := filepath.Join(markers, "go")
	drained := func(name string, want bool) {
		t.Helper()
		natstest.Eventually(t, 30*time.Second, func() bool {
			hb, ok := h.heartbeatOf(name)
			return ok && hb.Drained == want
		}, name+"'s heartbeat says drained="+map[bool]string{true: "true", false: "false"}[want])
	}
	build := func(name, script string) string {
		path := instantiate(t, name, script)
		id, last := h.ready(path)
		h.request(id, path, last, eventlog.BuildRequestID(id, 1))
		return id
	}

	// A build running when "a" is drained goes on to its end.
	h.run(Config{Name: "a", NixOptions: noSubst})
	drained("a", false)
	if hb, _ := h.heartbeatOf("a"); hb.Slots != 2 {
		t.Fatalf("a's heartbeat %+v, want 2 slots", hb)
	}
	slow := build("slow", "while [ ! -e "+marker+" ]; do sleep 0.1; done; echo > $out")
	natstest.Eventually(t, time.Minute, func() bool { b, _ := h.startedBy(slow); return b == "a" }, "a starts slow")
	if _, err := action.Drain(h.ctx, h.log, "a", op); err != nil {
		t.Fatal(err)
	}
	drained("a", true)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, func() bool { return h.outcomeOf(slow) != workv1.BuildOutcome_BUILD_OUTCOME_UNSPECIFIED }, "slow's report")
	if o := h.outcomeOf(slow); o != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
		t.Fatalf("slow, running when a was drained: %v, want succeeded", o)
	}

	// While a is drained, b takes the pool's work.
	stopB := h.run(Config{Name: "b", NixOptions: noSubst})
	drained("b", false)
	var quick []string
	for _, n := range []string{"q1", "q2", "q3", "q4"} {
		quick = append(quick, build(n, "echo > $out"))
	}
	natstest.Eventually(t, time.Minute, func() bool {
		for _, id := range quick {
			if h.outcomeOf(id) != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
				return false
			}
		}
		return true
	}, "the quick builds succeed")
	for _, id := range quick {
		if b, _ := h.startedBy(id); b != "b" {
			t.Fatalf("%s started by %q while a was drained, want b", id, b)
		}
	}

	// Both drained: a request waits; a's resume builds it.
	if _, err := action.Drain(h.ctx, h.log, "b", op); err != nil {
		t.Fatal(err)
	}
	drained("b", true)
	waits := build("waits", "echo > $out")
	res, err := action.Resume(h.ctx, h.log, "a", op)
	if err != nil {
		t.Fatal(err)
	}
	drained("a", false)
	natstest.Eventually(t, time.Minute, func() bool { return h.outcomeOf(waits) == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED }, "the waiting build succeeds after a's resume")
	if b, seq := h.startedBy(waits); b != "a" || seq < res.Seq {
		t.Fatalf("waits started by %q at %d, want a after its resume at %d", b, seq, res.Seq)
	}

	// A builder started drained takes nothing: with a drained again and b
	// restarted while drained, a request is built by b after b's resume.
	if _, err := action.Drain(h.ctx, h.log, "a", op); err != nil {
		t.Fatal(err)
	}
	drained("a", true)
	stopB()
	h.run(Config{Name: "b", NixOptions: noSubst})
	drained("b", true)
	later := build("later", "echo > $out")
	if res, err = action.Resume(h.ctx, h.log, "b", op); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, func() bool { return h.outcomeOf(later) == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED }, "the later build succeeds after b's resume")
	if b, seq := h.startedBy(later); b != "b" || seq < res.Seq {
		t.Fatalf("later started by %q at %d, want b after its resume at %d", b, seq, res.Seq)
	}
}

// TestDrainHandsBackQueuedRequests: requests a batching builder has taken
// but not begun (queued behind a running build for its one lane) are
// handed back when it is drained, and another builder of the pool builds
// them while the running build still runs; that one finishes where it
// began.
func TestDrainHandsBackQueuedRequests(t *testing.T) {
	h := newHarness(t)
	op := &eventsv1.Actor{Who: "unix:carol", Source: action.SourceAdmin}
	markers, err := os.MkdirTemp("", "ekaci-drain-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(markers, "go")
	build := func(name, script string) string {
		path := instantiate(t, name, script)
		id, last := h.ready(path)
		h.request(id, path, last, eventlog.BuildRequestID(id, 1))
		return id
	}
	onePool := []machines.Pool{{System: service.CurrentSystem(), Class: workv1.BuildClass_BUILD_CLASS_LOCAL, MaxJobs: 1}}
	h.run(Config{Name: "a", NixOptions: noSubst, Pools: onePool})
	slow := build("slow", "while [ ! -e "+marker+" ]; do sleep 0.1; done; echo > $out")
	natstest.Eventually(t, time.Minute, func() bool { b, _ := h.startedBy(slow); return b == "a" }, "a starts slow")
	var queued []string
	for _, n := range []string{"q1", "q2", "q3"} {
		queued = append(queued, build(n, "echo > $out"))
	}
	// a holds all four requests: slow building, the others in its queue.
	cons, err := h.js.Consumer(h.ctx, eventlog.WorkStream, eventlog.BuilderDurable(service.CurrentSystem(), workv1.BuildClass_BUILD_CLASS_LOCAL))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, func() bool {
		info, err := cons.Info(h.ctx)
		return err == nil && info.NumAckPending == 4 && info.NumPending == 0
	}, "a took the four requests")
	if _, err := action.Drain(h.ctx, h.log, "a", op); err != nil {
		t.Fatal(err)
	}
	h.run(Config{Name: "b", NixOptions: noSubst})
	natstest.Eventually(t, time.Minute, func() bool {
		for _, id := range queued {
			if h.outcomeOf(id) != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
				return false
			}
		}
		return true
	}, "the queued builds succeed on b while slow still runs on a")
	for _, id := range queued {
		if b, _ := h.startedBy(id); b != "b" {
			t.Fatalf("%s started by %q, want b: a was drained before it began", id, b)
		}
	}
	if o := h.outcomeOf(slow); o != workv1.BuildOutcome_BUILD_OUTCOME_UNSPECIFIED {
		t.Fatalf("slow reported %v before its marker", o)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, time.Minute, func() bool { return h.outcomeOf(slow) == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED }, "slow succeeds on a, drained")
}
