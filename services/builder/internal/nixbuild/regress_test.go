package nixbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Regression tests for the causes of issue 10 that live in this package;
// each failed on the code before it (see the builder notes).

// TestValidOutputSucceedsNextToAFailure: an output that is already valid
// is a success whatever else its batch holds (cause 3: the default branch
// failed it when another derivation of the batch failed).
func TestValidOutputSucceedsNextToAFailure(t *testing.T) {
	valid, _ := instantiate(t, "echo built-before > $out")
	if out, err := exec.Command("nix-store", "--realise", valid, "--option", "substituters", "").CombinedOutput(); err != nil {
		t.Fatalf("prebuild: %v %s", err, out)
	}
	bad, _ := instantiate(t, "echo broken; exit 1")
	res, err := Realise(context.Background(), []Job{{DrvPath: valid}, {DrvPath: bad}}, Options{NixOptions: noSubst})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != Succeeded {
		t.Errorf("already valid: %+v, want succeeded", res[0])
	}
	if res[1].Outcome != Failed {
		t.Errorf("failing: %+v, want failed", res[1])
	}
}

// TestLongLineDoesNotWedgeABatch: a 5 MB line followed by 20,000 short
// ones, in a batch (cause 5: the batch path's scanner stopped at 4 MiB,
// nix-build blocked on its stderr and the lane hung until its context
// ended).
func TestLongLineDoesNotWedgeABatch(t *testing.T) {
	spew, _ := instantiate(t, "head -c 5000000 /dev/zero | tr '\\0' a; echo; i=0; while [ $i -lt 20000 ]; do echo short-$i; i=$((i+1)); done; echo done > $out")
	other, _ := instantiate(t, "echo other > $out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	var got lines
	jobs := []Job{{DrvPath: spew, LogPath: filepath.Join(dir, "spew.log.zst"), OnLine: got.add}, {DrvPath: other}}
	begin := time.Now()
	res, err := Realise(ctx, jobs, Options{NixOptions: noSubst, NoOutputTimeout: 5 * time.Second, TotalTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the batch returned only when its context ended, after %v", time.Since(begin))
	}
	if res[0].Outcome != Succeeded || res[1].Outcome != Succeeded {
		t.Fatalf("results %+v", res)
	}
	l := got.get()
	if len(l) == 0 || l[len(l)-1] != "short-19999" {
		t.Fatalf("%d lines, last %q: the short lines after the long one were lost", len(l), l[len(l)-1:])
	}
	long := 0
	for _, s := range l {
		if len(s) > MaxLineBytes {
			t.Fatalf("a piece of %d bytes", len(s))
		}
		if strings.HasPrefix(s, "aaaa") {
			long += len(s)
		}
	}
	if long != 5000000 {
		t.Fatalf("the long line came out as %d bytes of pieces, want 5000000", long)
	}
	if len(res[0].Tail) > DefaultTailBytes {
		t.Fatalf("tail of %d bytes", len(res[0].Tail))
	}
}

// TestGarbageCollectedDrvIsInfrastructure: a .drv deleted from the store
// after evaluation (a GC before the build) is an infrastructure
// interruption, never a build failure (cause 8: nix-build said "does not
// exist", recorded as failed, and after the retry failed for good).
func TestGarbageCollectedDrvIsInfrastructure(t *testing.T) {
	gone, _ := instantiate(t, "echo never > $out")
	if out, err := exec.Command("nix-store", "--delete", gone).CombinedOutput(); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	ok, _ := instantiate(t, "echo fine > $out")
	for _, tt := range []struct {
		name string
		jobs []Job
	}{
		{"alone", []Job{{DrvPath: gone}}},
		{"in a batch", []Job{{DrvPath: ok}, {DrvPath: gone}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Realise(context.Background(), tt.jobs, Options{NixOptions: noSubst})
			if err != nil {
				t.Fatal(err)
			}
			r := res[len(res)-1]
			if r.Outcome != Interrupted || r.Interruption != Infrastructure {
				t.Fatalf("gone .drv: %+v, want an infrastructure interruption", r)
			}
			if len(res) == 2 && res[0].Outcome != Succeeded {
				t.Fatalf("its batch mate: %+v", res[0])
			}
		})
	}
}

// TestNixRefusingTheBatchIsNotTheirFailure: an invocation that fails as a
// whole is built again in halves, and every derivation gets its own
// verdict. Nix 2.8 aborts a whole invocation when one derivation's
// outputs refer to each other (and nix-build refused a whole command line
// for one derivation without `out`, cause 2).
func TestNixRefusingTheBatchIsNotTheirFailure(t *testing.T) {
	var jobs []Job
	for i := range 5 {
		d, _ := instantiate(t, fmt.Sprintf("echo %d > $out", i))
		jobs = append(jobs, Job{DrvPath: d})
	}
	bad, _ := instantiateWith(t, "echo $b > $a; echo $a > $b", `outputs = [ "a" "b" ];`)
	multi, _ := instantiateWith(t, "echo 1 > $a; echo 2 > $b", `outputs = [ "a" "b" ];`)
	jobs = append(jobs, Job{DrvPath: multi})
	jobs = append(jobs, Job{DrvPath: bad})
	res, err := Realise(context.Background(), jobs, Options{NixOptions: noSubst})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res[:6] {
		if r.Outcome != Succeeded {
			t.Errorf("job %d: %+v", i, r)
		}
	}
	if r := res[6]; r.Outcome != Failed || r.Invocations < 3 {
		t.Errorf("output cycle: %+v, want failed after the batch, a half and itself twice", r)
	}
}

// TestKilledParentLeavesNoNix: when the process running Realise is
// SIGKILLed, nix-store gets SIGTERM (Pdeathsig) and stops its builder
// (cause 6: nix-build went on building, reparented to init); and when
// nix-store itself is SIGKILLed too, Sweep ends the builder it left.
func TestKilledParentLeavesNoNix(t *testing.T) {
	if os.Getenv("NIXBUILD_HELPER_DRV") != "" {
		helperRealise()
		return
	}
	for _, tt := range []struct {
		name      string
		killNix   bool // SIGKILL nix-store as well: only Sweep can help
		wantSwept bool
	}{
		{name: "parent killed", killNix: false},
		{name: "parent and nix-store killed", killNix: true, wantSwept: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for try := 1; ; try++ {
				if again := func() bool {
					drv, marker := instantiate(t, "echo started; sleep 300")
					dir := t.TempDir()
					cmd := exec.Command(os.Args[0], "-test.run", "^TestKilledParentLeavesNoNix$")
					cmd.Env = append(os.Environ(), "NIXBUILD_HELPER_DRV="+drv, "NIXBUILD_HELPER_DIR="+dir)
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					defer cmd.Process.Kill()
					var builder proc
					deadline := time.Now().Add(30 * time.Second)
					// The builder's shell and the sleep it started: Nix kills
					// the shell itself when nix-store dies (its parent-death
					// signal), so the orphan Sweep must end is the sleep, and a
					// kill before the shell forked it leaves nothing to sweep
					// (under load that happened 3 times in a row).
					for child := false; builder.pid == 0 || !child; {
						for _, p := range markerProcs(marker) {
							if p.pid == p.pgrp {
								builder = p
							} else {
								child = true
							}
						}
						if time.Now().After(deadline) {
							t.Fatal("the helper's build never started")
						}
						time.Sleep(20 * time.Millisecond)
					}
					// Wait until the tracker has seen the builder's group.
					for tt.killNix {
						b, _ := os.ReadDir(dir)
						seen := false
						for _, e := range b {
							if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.Contains(string(data), fmt.Sprintf(`"pgid":%d`, builder.pgrp)) {
								seen = true
							}
						}
						if seen {
							break
						}
						if time.Now().After(deadline) {
							t.Fatal("the tracker never recorded the builder's group")
						}
						time.Sleep(20 * time.Millisecond)
					}
					if tt.killNix {
						_ = syscall.Kill(builder.ppid, syscall.SIGKILL) // nix-store: no chance to stop its builder
					}
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					if !tt.killNix {
						assertGone(t, marker)
						return false
					}
					time.Sleep(500 * time.Millisecond)
					if len(markerProcs(marker)) == 0 {
						// Its own doing or Nix's, not ekaci's: but with no orphan
						// left this run proves nothing about Sweep. Set it up again.
						t.Logf("try %d: the builder died by itself; setting the orphan up again", try)
						return true
					}
					sw, err := Sweep(dir, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if sw.Ended == 0 || len(sw.Drvs) != 1 || sw.Drvs[0] != drv || sw.Owners[0] != "helper" {
						t.Fatalf("swept %+v", sw)
					}
					assertGone(t, marker)
					if left, _ := os.ReadDir(dir); len(left) != 0 {
						t.Fatalf("tracker files left: %v", left)
					}
					return false
				}(); !again {
					return
				}
				if try == 3 {
					t.Fatal("the builder died by itself 3 times; Sweep was never put to the test")
				}
			}
		})
	}
}

func helperRealise() {
	tr, err := NewTracker(os.Getenv("NIXBUILD_HELPER_DIR"), "helper")
	if err != nil {
		os.Exit(3)
	}
	_, _ = Realise(context.Background(), []Job{{DrvPath: os.Getenv("NIXBUILD_HELPER_DRV")}}, Options{NixOptions: noSubst, Tracker: tr})
	os.Exit(0)
}
