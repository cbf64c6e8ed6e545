package builder

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
)

// jobsetFact appends a jobset's creation or conclusion, as the reader and
// the recorder do.
func (h *harness) jobsetFact(id string, concluded bool) {
	h.t.Helper()
	ev := &eventsv1.Event{Id: eventlog.JobsetCreatedID(id), Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: "change-" + id, Job: "packages"}}}
	if concluded {
		ev = &eventsv1.Event{Id: eventlog.ConcludedID(id), Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{ChangeId: "change-" + id, Job: "packages"}}}
	}
	if _, err := h.log.Append(h.ctx, id, ev); err != nil {
		h.t.Fatal(err)
	}
}

// deleteOutput asks Nix to delete path alone (never a whole-store GC:
// other tests share the store) and says whether it was deleted; a refusal
// must be Nix's "still alive", nothing else.
func deleteOutput(t *testing.T, path string) bool {
	t.Helper()
	out, err := exec.Command("nix-store", "--delete", path).CombinedOutput()
	if err == nil {
		if exec.Command("nix-store", "--check-validity", path).Run() == nil {
			t.Fatalf("nix-store --delete %s succeeded and the path is still valid", path)
		}
		return true
	}
	if !strings.Contains(string(out), "still alive") {
		t.Fatalf("nix-store --delete %s: %v\n%s", path, err, out)
	}
	return false
}

func outputOf(t *testing.T, drv string) string {
	t.Helper()
	out, err := exec.Command("nix-store", "--query", "--outputs", drv).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestOutputsRootedUntilJobsetsConclude: the outputs a builder finds valid
// (built now, or valid before) cannot be deleted from its store while a
// jobset open when they were built is still running, across a restart of
// the builder, and can be once it concluded; a jobset that concludes
// while the builder is down has its roots removed by the next life
// (review finding 14: no roots at all, so a GC between a dependency's
// build and its dependent's deleted the dependency's output).
func TestOutputsRootedUntilJobsetsConclude(t *testing.T) {
	old := rootsPoll
	rootsPoll = 200 * time.Millisecond
	t.Cleanup(func() { rootsPoll = old })
	tests := []struct {
		name     string
		prebuilt bool // the output is valid before the builder sees it
		downAt   bool // the jobset concludes while the builder is down
	}{
		{name: "built for the jobset"},
		{name: "valid before"},
		{name: "concluded while the builder was down", downAt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			state := t.TempDir()
			cfg := Config{NixOptions: noSubst, StateDir: state, Pools: []machines.Pool{{System: currentSystem(), Class: workv1.BuildClass_BUILD_CLASS_LOCAL, MaxJobs: 1}}}
			jobset := "js-" + notKeyChars.ReplaceAllString(tt.name, "-")
			h.jobsetFact(jobset, false)
			drv := instantiate(t, "dep", "echo dep > $out")
			out := outputOf(t, drv)
			if tt.prebuilt {
				if b, err := exec.Command("nix-store", "--option", "substituters", "", "--realise", drv).CombinedOutput(); err != nil {
					t.Fatalf("nix-store --realise: %v\n%s", err, b)
				}
			}
			id, last := h.ready(drv)
			h.request(id, drv, last, "req-"+id)
			stop := h.run(cfg)
			if r := h.waitReports(1, 60*time.Second)[0].rep; r.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
				t.Fatalf("report %v, want a success", r)
			}
			if deleteOutput(t, out) {
				t.Fatal("the output was deleted while its jobset runs")
			}
			// Another life of the builder (the state dir is its): the roots
			// stay while the jobset runs.
			stop()
			if tt.downAt {
				h.jobsetFact(jobset, true)
			}
			cfg.Name = "next-life"
			h.run(cfg)
			if !tt.downAt {
				time.Sleep(3 * rootsPoll) // it has read the log by now
				if deleteOutput(t, out) {
					t.Fatal("the output was deleted after the builder restarted, while its jobset runs")
				}
				h.jobsetFact(jobset, true)
			}
			natstest.Eventually(t, 30*time.Second, func() bool { return deleteOutput(t, out) }, "the output can be deleted once its jobset concluded")
		})
	}
}
