package evaluator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/binarycache"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// With a cache, every evaluated attribute's .drv is in the cache by the
// time the job is recorded as evaluated: builders with stores of their
// own fetch them from there.
func TestEvaluatedDrvsArePushed(t *testing.T) {
	h := newHarness(t)
	n := nonce()
	cacheDir := t.TempDir()
	h.run(Config{Cache: &binarycache.Cache{URL: "file://" + cacheDir, NixOptions: []string{"substituters", ""}}})
	dir := checkout(t, map[string]string{"release.nix": mkLib(n) + `{ a = mk "a"; b = mk "b"; }`})
	id, _ := h.created("change-"+n, "job", &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir})
	by := h.concluded(id, time.Minute)
	if len(by["evaluated"]) != 1 {
		t.Fatalf("facts %v, want evaluated", keys(by))
	}
	attrs := by["evaluated"][0].Event.GetJobsetEvaluated().GetAttrs()
	if len(attrs) != 2 {
		t.Fatalf("attrs %v", attrs)
	}
	for _, a := range attrs {
		narinfo := strings.SplitN(filepath.Base(a.GetDrvPath()), "-", 2)[0] + ".narinfo"
		if _, err := os.Stat(filepath.Join(cacheDir, narinfo)); err != nil {
			t.Errorf("%s: its .drv %s is not in the cache: %v", a.GetAttr(), a.GetDrvPath(), err)
		}
	}
}
