package checkrun

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func drv(name string) string { return "/nix/store/" + strings.Repeat("b", 32) + "-" + name + ".drv" }

func res(attr, state string, d eventsv1.Difference, mod func(r *eventsv1.AttrResult)) *eventsv1.AttrResult {
	r := &eventsv1.AttrResult{Attr: attr, DrvPath: drv(attr), State: state, Difference: d}
	if mod != nil {
		mod(r)
	}
	return r
}

const (
	newAttr   = eventsv1.Difference_DIFFERENCE_NEW
	changed   = eventsv1.Difference_DIFFERENCE_CHANGED
	unchanged = eventsv1.Difference_DIFFERENCE_UNCHANGED
	removed   = eventsv1.Difference_DIFFERENCE_REMOVED
)

func counts(rs []*eventsv1.AttrResult) map[string]uint32 {
	m := map[string]uint32{}
	for _, r := range rs {
		m[r.GetState()]++
	}
	return m
}

func concluded(c eventsv1.Conclusion, rs ...*eventsv1.AttrResult) *eventsv1.JobsetConcluded {
	return &eventsv1.JobsetConcluded{Job: "packages", Conclusion: c, Results: rs, Counts: counts(rs)}
}

// TestJobSummaryGolden: what a reviewer reads on a gate, per kind of
// outcome (testdata/summary/*.md; -update rewrites them).
func TestJobSummaryGolden(t *testing.T) {
	success, failure := eventsv1.Conclusion_CONCLUSION_SUCCESS, eventsv1.Conclusion_CONCLUSION_FAILURE
	var many []*eventsv1.AttrResult
	for i := 0; i < 400; i++ {
		many = append(many, res(fmt.Sprintf("pkg%03d", i), "failed", newAttr, func(r *eventsv1.AttrResult) {
			r.Error = strings.Repeat(fmt.Sprintf("error line of pkg%03d\n", i), 20)
		}))
	}
	for _, tt := range []struct {
		name   string
		c      *eventsv1.JobsetConcluded
		causes map[string]Cause
	}{
		{"clean", concluded(success, res("hello", "succeeded", newAttr, nil), res("world", "succeeded", changed, func(r *eventsv1.AttrResult) { r.Cached = true }),
			res("old", "removed", removed, nil), res("same", "succeeded", unchanged, nil)), nil},
		{"nothing-to-build", concluded(success), nil},
		{"root-cause", concluded(failure, append([]*eventsv1.AttrResult{res("openssl", "failed", newAttr, nil)}, func() (rs []*eventsv1.AttrResult) {
			for i := 0; i < 20; i++ {
				rs = append(rs, res(fmt.Sprintf("dep%02d", i), "transitive-failure", newAttr, func(r *eventsv1.AttrResult) { r.Cause = drv("openssl") }))
			}
			return rs
		}()...)...), map[string]Cause{drv("openssl"): {LogTail: "configure: error: no C compiler", LogRef: "https://ci.example/logs/x/2"}}},
		{"base-failures", concluded(success, res("hello", "succeeded", changed, nil), res("legacy", "failed", unchanged, func(r *eventsv1.AttrResult) { r.Error = "old breakage" }),
			res("legacy-dep", "transitive-failure", unchanged, func(r *eventsv1.AttrResult) { r.Cause = drv("legacy") })), nil},
		{"eval-error", concluded(failure, res("broken", "eval-error", newAttr, func(r *eventsv1.AttrResult) {
			r.DrvPath, r.Error = "", "error: undefined variable 'foo' at release.nix:3:5"
		})), nil},
		{"infrastructure", concluded(failure, res("big", "interrupted", newAttr, func(r *eventsv1.AttrResult) {
			r.Interruption, r.Error = eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE, "nix-store could not be started"
		})), nil},
		{"timeout", concluded(failure, res("slow", "interrupted", changed, func(r *eventsv1.AttrResult) {
			r.Interruption, r.Error = eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, "no output for 1h"
		})), nil},
		{"too-large", concluded(failure, many...), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := JobSummary(tt.c, tt.causes)
			if n := utf8.RuneCountInString(out.Summary); n > MaxSummary {
				t.Fatalf("summary has %d characters, GitHub allows %d", n, MaxSummary)
			}
			got := "# " + out.Title + "\n\n" + out.Summary
			path := filepath.Join("testdata", "summary", tt.name+".md")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Fatalf("JobSummary(%s) differs from %s (-update rewrites it):\n%s", tt.name, path, got)
			}
		})
	}
}

func TestConclusions(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    *eventsv1.AttrResult
		want string
	}{
		{"build failure", res("a", "failed", newAttr, nil), Failure},
		{"transitive", res("a", "transitive-failure", newAttr, nil), Failure},
		{"eval error", res("a", "eval-error", newAttr, nil), Failure},
		{"timeout", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT }), TimedOut},
		{"out of memory", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_OUT_OF_MEMORY }), Failure},
		{"process death", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH }), Failure},
		{"unsatisfiable", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE }), Failure},
		{"cancelled", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED }), Cancelled},
		{"infrastructure", res("a", "interrupted", newAttr, func(r *eventsv1.AttrResult) { r.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE }), Neutral},
		{"blocked", res("a", "blocked", newAttr, nil), Neutral},
		{"succeeded", res("a", "succeeded", newAttr, nil), Success},
	} {
		if got := AttrConclusion(tt.r); got != tt.want {
			t.Errorf("AttrConclusion(%s) = %s, want %s", tt.name, got, tt.want)
		}
	}
	for c, want := range map[eventsv1.Conclusion]string{eventsv1.Conclusion_CONCLUSION_SUCCESS: Success, eventsv1.Conclusion_CONCLUSION_FAILURE: Failure,
		eventsv1.Conclusion_CONCLUSION_NEUTRAL: Neutral, eventsv1.Conclusion_CONCLUSION_CANCELLED: Cancelled} {
		if got := GateConclusion(c); got != want {
			t.Errorf("GateConclusion(%s) = %s, want %s", c, got, want)
		}
	}
}
