package builder

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/services/builder/internal/nixcorpus"
)

func classOfReport(r *workv1.BuildReport) nixcorpus.Class {
	switch {
	case r.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED:
		return nixcorpus.Succeeded
	case r.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_FAILED:
		return nixcorpus.Failed
	case r.GetInterruption() == eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT:
		return nixcorpus.TimedOut
	}
	return nixcorpus.Class(r.GetOutcome().String() + "/" + r.GetInterruption().String())
}

// TestCorpusThroughBuilder is the differential corpus end to end: every
// case made buildable in a real embedded JetStream, requested as the
// router does, built by builder.Run (batched, and with NoBatch), and the
// verdict of each report compared with plain Nix building it alone, in
// the same run.
func TestCorpusThroughBuilder(t *testing.T) {
	needNix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	dir := t.TempDir()
	gt, err := nixcorpus.Instantiate(ctx, filepath.Join(dir, "truth"), "bt-truth-"+stamp)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := nixcorpus.GroundTruth(ctx, gt)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name    string
		noBatch bool
	}{{"batched", false}, {"no batch", true}} {
		t.Run(mode.name, func(t *testing.T) {
			in, err := nixcorpus.Instantiate(ctx, filepath.Join(dir, mode.name), "bt-"+mode.name+"-"+stamp)
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t)
			byID := map[string]string{}
			for _, name := range nixcorpus.Names() {
				id, last := h.ready(in.Drvs[name])
				byID[id] = name
				h.request(id, in.Drvs[name], last, "req-"+id)
			}
			h.run(Config{NixOptions: nixcorpus.NixOptions, NoOutputTimeout: nixcorpus.MaxSilent, NoBatch: mode.noBatch})
			got := h.waitReports(len(byID), 5*time.Minute)
			seen := map[string]bool{}
			for _, r := range got {
				name := byID[r.rep.GetDrvId()]
				if seen[name] {
					t.Errorf("%s reported twice", name)
				}
				seen[name] = true
				if c, want := classOfReport(r.rep), truth[name].Class; c != want {
					t.Errorf("%s: the builder reports %s, plain Nix alone %s (%v)", name, c, want, r.rep)
				}
				if size := eventlog.JSONSize(r.rep); size > 64<<10 {
					t.Errorf("%s: report of %d bytes", name, size)
				}
				if r.rep.GetHolder() == "" || r.msgID != "report-"+r.rep.GetDrvId()+"-1" {
					t.Errorf("%s: holder %q, msg id %q", name, r.rep.GetHolder(), r.msgID)
				}
			}
		})
	}
}
