package ekaci_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/services/ekaci"
)

// TestOutputsLiveUntilTheChangeConcludes is issue 10's GC-roots proof in
// the all-in-one: the output of a dependency built for a running change
// cannot be deleted from the store (`nix-store --delete` refuses it: never
// a whole-store GC, other tests share this store) while the change runs,
// and can be once it concluded. The dependency's output is needed by a
// derivation that waits for a marker file, so that the change runs as
// long as the test wants; every derivation has a Nix of its own
// (NoBatch), so no running Nix holds a temporary root on the dependency's
// output: only ekaci's roots can keep it. Without them the first delete
// succeeds (review finding 14: no roots, so a GC between a dependency's
// build and its dependent's deleted it).
func TestOutputsLiveUntilTheChangeConcludes(t *testing.T) {
	requireNix(t)
	markers, err := os.MkdirTemp("", "ekaci-roots-markers-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil { // builders run as Nix's build users
		t.Fatal(err)
	}
	release := filepath.Join(markers, "release")
	repo := makeRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"roots": {"file": "default.nix"}}}`,
		"default.nix": `
let
  mk = name: script: derivation {
    inherit name;
    PATH = "/usr/bin:/bin";
    system = builtins.currentSystem;
    salt = "@SALT@";
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
in rec {
  dep = mk "roots-dep" "echo dep > $out";
  waiter = mk "roots-waiter" "while [ ! -e ` + release + ` ]; do echo waiting; sleep 0.2; done; echo done > $out";
  top = mk "roots-top" "cat ${dep} ${waiter} > $out";
}`,
	})
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) { c.NoBatch = true })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cr, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	change, err := ekaci.Submit(ctx, h.app.Events(), cr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", filepath.Join(repo, "default.nix"), "-A", "dep").Output()
	if err != nil {
		t.Fatal(err)
	}
	depDrv := strings.TrimSpace(string(out))
	depOut := outputOf(t, depDrv)
	depID, err := eventlog.DrvID(depDrv)
	if err != nil {
		t.Fatal(err)
	}
	// Recorded as succeeded: its outputs were judged (and rooted) before.
	natstest.Eventually(t, 3*time.Minute, func() bool {
		recs, _, err := h.app.Events().Load(ctx, eventlog.Drv, depID)
		if err != nil {
			return false
		}
		evs := make([]*eventsv1.Event, len(recs))
		for i, r := range recs {
			evs[i] = r.Event
		}
		cur, err := buildstate.Fold(evs)
		return err == nil && cur.State == buildstate.Succeeded
	}, "the dependency is built")
	for range 2 {
		if deleted(t, depOut) {
			t.Fatal("the dependency's output was deleted while its change runs")
		}
		time.Sleep(time.Second)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := ekaci.Wait(ctx, h.app.Events(), change, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if o.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("the change concluded %v: %s", o.Conclusion, o.Summary)
	}
	natstest.Eventually(t, time.Minute, func() bool { return deleted(t, depOut) }, "the output can be deleted once the change concluded")
}

// deleted asks Nix to delete path alone and says whether it did; a
// refusal must be Nix's "still alive", nothing else.
func deleted(t *testing.T, path string) bool {
	t.Helper()
	out, err := exec.Command("nix-store", "--delete", path).CombinedOutput()
	if err == nil {
		return exec.Command("nix-store", "--check-validity", path).Run() != nil
	}
	if !strings.Contains(string(out), "still alive") {
		t.Fatalf("nix-store --delete %s: %v\n%s", path, err, out)
	}
	return false
}
