package gcroots

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/nixtest"
)

var offline = nixtest.NoSubstituters()

// instantiate writes n fresh derivations (unique names: nothing else roots
// them) and returns their .drv paths.
func instantiate(t *testing.T, n int) []string {
	t.Helper()
	nixtest.Require(t)
	var list strings.Builder
	for i := range n {
		fmt.Fprintf(&list, ` (derivation { name = "gcroots-test-%d-%d"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; })`, time.Now().UnixNano(), i)
	}
	out, err := exec.Command("nix-instantiate", append(nixtest.NoSubstitutersArgs(), "-E", "["+list.String()+" ]")...).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	return strings.Fields(string(out))
}

// deletable tries to delete p from the store: nix-store refuses a live path.
func deletable(t *testing.T, p string) bool {
	t.Helper()
	out, err := exec.Command("nix-store", "--delete", p).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "still alive") {
		t.Fatalf("nix-store --delete %s: %v: %s", p, err, out)
	}
	return err == nil
}

func TestAddRootsSurviveGC(t *testing.T) {
	drvs := instantiate(t, 3)
	rooted, unrooted := drvs[:2], drvs[2]
	dir := filepath.Join(t.TempDir(), "change", "jobset")
	if err := Add(context.Background(), dir, rooted, offline); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"drv", "drv-2"} {
		if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != rooted[i] {
			t.Errorf("root %s -> %q (%v), want %s", name, target, err, rooted[i])
		}
	}
	// Again, as a redelivered evaluation does: the same roots, no error.
	if err := Add(context.Background(), dir, rooted, offline); err != nil {
		t.Fatalf("adding the roots again: %v", err)
	}
	for _, p := range rooted {
		if deletable(t, p) {
			t.Errorf("%s was deleted although rooted", p)
		}
	}
	if !deletable(t, unrooted) {
		t.Errorf("%s, never rooted, was kept", unrooted)
	}
	// Removing the directory (what the gitter does on change.concluded)
	// unroots them.
	if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}
	for _, p := range rooted {
		if !deletable(t, p) {
			t.Errorf("%s still alive after its roots were removed", p)
		}
	}
}

func TestAddRefusesNonDrv(t *testing.T) {
	if err := Add(context.Background(), t.TempDir(), []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"}, offline); err == nil {
		t.Fatal("rooted a path that is not a .drv")
	}
}
