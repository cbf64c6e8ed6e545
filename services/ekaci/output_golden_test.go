package ekaci

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// update rewrites the golden files: go test -run Golden -update.
var update = flag.Bool("update", false, "rewrite testdata/output/*.golden from the current output")

// TestOutputGolden pins what a person or a script reads at the end of
// `ekaci run`, in text and in JSON, for the outcomes users see most.
func TestOutputGolden(t *testing.T) {
	const drvA = "/nix/store/0c5vh6yqf1mwwcv0m6jxg3dk8q5l0v4n-a.drv"
	const drvB = "/nix/store/1d6wi7zrg2nxxdw1n7kyh4el9r6m1w5p-b.drv"
	cases := []struct {
		name string
		o    *Outcome
	}{
		{"success-with-base", &Outcome{ChangeID: "c1", Conclusion: eventsv1.Conclusion_CONCLUSION_SUCCESS, Summary: "1 of 1 jobs succeeded",
			Jobsets: []*eventsv1.JobsetConcluded{{Job: "packages", Conclusion: eventsv1.Conclusion_CONCLUSION_SUCCESS, Results: []*eventsv1.AttrResult{
				{Attr: "hello", DrvPath: drvA, State: "succeeded", Difference: eventsv1.Difference_DIFFERENCE_CHANGED, DurationMs: 1200},
				{Attr: "old", DrvPath: drvB, State: "failed", Difference: eventsv1.Difference_DIFFERENCE_UNCHANGED, Error: "builder for 'b' failed with exit code 1\nlast line"},
			}}}}},
		{"failure-transitive", &Outcome{ChangeID: "c2", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "1 of 1 jobs failed",
			Jobsets: []*eventsv1.JobsetConcluded{{Job: "packages", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Results: []*eventsv1.AttrResult{
				{Attr: "lib", DrvPath: drvA, State: "failed", Difference: eventsv1.Difference_DIFFERENCE_NEW, Error: "boom", DurationMs: 40},
				{Attr: "app", DrvPath: drvB, State: "transitive-failure", Difference: eventsv1.Difference_DIFFERENCE_NEW, Cause: drvA},
			}}}}},
		{"eval-error-and-removed", &Outcome{ChangeID: "c3", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "1 of 1 jobs failed",
			Jobsets: []*eventsv1.JobsetConcluded{{Job: "packages", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Results: []*eventsv1.AttrResult{
				{Attr: "broken", State: "eval-error", Difference: eventsv1.Difference_DIFFERENCE_NEW, Error: "error: attribute 'x' missing"},
				{Attr: "gone", State: "removed", Difference: eventsv1.Difference_DIFFERENCE_REMOVED},
			}}}}},
		{"neutral-no-config", &Outcome{ChangeID: "c4", Conclusion: eventsv1.Conclusion_CONCLUSION_NEUTRAL, Summary: "no .ekaci/config.json"}},
		{"too-large-to-list", &Outcome{ChangeID: "c5", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "1 of 1 jobs failed",
			Jobsets: []*eventsv1.JobsetConcluded{{Job: "pkgs", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE,
				Results:        []*eventsv1.AttrResult{{Attr: "broken", State: "failed", Difference: eventsv1.Difference_DIFFERENCE_NEW, Error: "boom"}},
				ResultsOmitted: 99988, Counts: map[string]uint32{"succeeded": 99988, "failed": 1}}}}},
		{"checks", &Outcome{ChangeID: "c6", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "0 of 1 jobs failed, 2 of 4 checks failed",
			Jobsets: []*eventsv1.JobsetConcluded{{Job: "tools", Conclusion: eventsv1.Conclusion_CONCLUSION_SUCCESS, Results: []*eventsv1.AttrResult{
				{Attr: "greet", DrvPath: drvA, State: "succeeded", Difference: eventsv1.Difference_DIFFERENCE_NEW, DurationMs: 30}}}},
			Checks: []*eventsv1.Event{
				{Payload: &eventsv1.Event_CheckSucceeded{CheckSucceeded: &eventsv1.CheckSucceeded{Name: "lint", Attempt: 1,
					Head: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_HEAD, DurationMs: 210, Log: "0a1b2c3d4e5f60718293/1.log.zst"}}}},
				{Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{Name: "style", Attempt: 0, OutputTail: "bad indent at main.c:3\n",
					Head: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_HEAD, ExitCode: 1, Cached: true, Log: "1a1b2c3d4e5f60718293/1.log.zst"},
					Base: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_BASE, ExitCode: 1, Log: "1a1b2c3d4e5f60718293/1-base.log.zst"}, BaseFailed: true}}},
				{Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{Name: "test", Attempt: 2, OutputTail: "FAIL: test_add\n",
					Head: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_HEAD, ExitCode: 3, DurationMs: 950, Log: "2a1b2c3d4e5f60718293/2.log.zst"}}}},
				{Payload: &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{Name: "fuzz", Attempt: 1, Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT,
					Detail: "stopped at its time limit of 10m0s", OutputTail: "round 9001\n",
					Head: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_HEAD, ExitCode: -1, Interruption: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT, DurationMs: 600000, Log: "3a1b2c3d4e5f60718293/1.log.zst"}}}},
			}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var text, js bytes.Buffer
			if err := PrintText(&text, c.o); err != nil {
				t.Fatal(err)
			}
			if err := PrintJSON(&js, c.o); err != nil {
				t.Fatal(err)
			}
			golden(t, c.name+".txt.golden", text.Bytes())
			golden(t, c.name+".json.golden", js.Bytes())
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "output", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (create it with go test -run Golden -update): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -run Golden -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
