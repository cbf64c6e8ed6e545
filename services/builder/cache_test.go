package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/binarycache"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// A builder with a cache gets a .drv it does not have from the cache, and
// pushes what it built to the cache and to an upstream one, before it
// reports the success.
func TestCacheFetchAndPush(t *testing.T) {
	h := newHarness(t)
	drv := instantiate(t, "cached", "echo cached > $out")
	cacheDir, upstreamDir := t.TempDir(), t.TempDir()
	cache := binarycache.Cache{URL: "file://" + cacheDir, NixOptions: noSubst}
	upstream := binarycache.Cache{URL: "file://" + upstreamDir, NixOptions: noSubst}
	ctx := context.Background()
	// What the evaluator does, then the .drv leaves this store: the
	// builder has only the cache to get it from.
	if err := cache.PushDerivations(ctx, []string{drv}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nix-store", "--delete", drv).CombinedOutput(); err != nil {
		t.Fatalf("nix-store --delete %s: %v: %s", drv, err, out)
	}
	if exec.Command("nix-store", "--check-validity", drv).Run() == nil {
		t.Fatalf("%s still valid after nix-store --delete", drv)
	}
	id, last := h.ready(drv)
	h.request(id, drv, last, "req-"+id)
	h.run(Config{NixOptions: noSubst, Cache: &cache, PushTo: []binarycache.Cache{upstream}})
	r := h.waitReports(1, 60*time.Second)[0].rep
	if r.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
		t.Fatalf("report %v, want a success", r)
	}
	out, err := exec.Command("nix-store", "--query", "--outputs", drv).Output()
	if err != nil {
		t.Fatal(err)
	}
	narinfo := strings.SplitN(filepath.Base(strings.TrimSpace(string(out))), "-", 2)[0] + ".narinfo"
	for _, dir := range []string{cacheDir, upstreamDir} {
		if _, err := os.Stat(filepath.Join(dir, narinfo)); err != nil {
			t.Errorf("output of %s not in the cache %s: %v", drv, dir, err)
		}
	}
}
