package binarycache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/nixtest"
)

// instantiate writes a two-derivation closure (dep, top) unique to this
// test run and returns top's .drv and dep's .drv.
func instantiate(t *testing.T, dir string) (top, dep string) {
	t.Helper()
	salt := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	expr := fmt.Sprintf(`let dep = derivation { name = "bc-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo %[1]s > $out"]; };
in { top = derivation { name = "bc-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "read x < ${dep}; echo $x top > $out"]; }; inherit dep; }`, salt)
	f := filepath.Join(dir, "default.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", append(nixtest.NoSubstitutersArgs(), "-A", "top", "-A", "dep", f)...).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		t.Fatalf("nix-instantiate printed %q, want two .drv paths", out)
	}
	return lines[0], lines[1]
}

func narinfo(cacheDir, storePath string) string {
	return filepath.Join(cacheDir, strings.SplitN(filepath.Base(storePath), "-", 2)[0]+".narinfo")
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// validIn asks Nix whether path is valid in the store rooted at root.
func validIn(t *testing.T, root, path string) bool {
	t.Helper()
	err := exec.Command("nix-store", "--store", root, "--check-validity", path).Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("nix-store --check-validity: %v", err)
	}
	return err == nil
}

func TestDerivationsReachAnotherStore(t *testing.T) {
	nixtest.Require(t)
	tmp := t.TempDir()
	top, dep := instantiate(t, tmp)
	cacheDir := filepath.Join(tmp, "cache")
	c := Cache{URL: "file://" + cacheDir, NixOptions: nixtest.NoSubstituters()}
	ctx := context.Background()
	if err := c.PushDerivations(ctx, []string{top}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{top, dep} {
		if !exists(narinfo(cacheDir, p)) {
			t.Errorf("after PushDerivations(%s): no narinfo for %s in the cache", top, p)
		}
	}
	// The outputs were not built by the push.
	out, err := exec.Command("nix-store", "--query", "--outputs", top).Output()
	if err != nil {
		t.Fatal(err)
	}
	if o := strings.TrimSpace(string(out)); validIn(t, "/", o) {
		t.Errorf("PushDerivations built %s", o)
	}

	other := filepath.Join(tmp, "other")
	fetch := Cache{URL: c.URL, NixOptions: append(nixtest.NoSubstituters(), "store", other)}
	if validIn(t, other, top) {
		t.Fatalf("%s valid in a fresh store before the fetch", top)
	}
	if err := fetch.FetchDerivations(ctx, []string{top}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{top, dep} {
		if !validIn(t, other, p) {
			t.Errorf("after FetchDerivations(%s): %s not valid in the other store", top, p)
		}
	}
}

func TestOutputsPushed(t *testing.T) {
	nixtest.Require(t)
	tmp := t.TempDir()
	top, _ := instantiate(t, tmp)
	if out, err := exec.Command("nix-store", append([]string{"--realise", top}, nixtest.NoSubstitutersArgs()...)...).CombinedOutput(); err != nil {
		t.Fatalf("nix-store --realise: %v: %s", err, out)
	}
	cacheDir := filepath.Join(tmp, "cache")
	c := Cache{URL: "file://" + cacheDir, NixOptions: nixtest.NoSubstituters()}
	if err := c.PushOutputs(context.Background(), []string{top}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-store", "--query", "--outputs", top).Output()
	if err != nil {
		t.Fatal(err)
	}
	if o := strings.TrimSpace(string(out)); !exists(narinfo(cacheDir, o)) {
		t.Errorf("after PushOutputs(%s): no narinfo for its output %s", top, o)
	}
	if exists(narinfo(cacheDir, top)) {
		t.Errorf("PushOutputs(%s) pushed the .drv itself", top)
	}

	// Another store fetches the output and its runtime closure (top's
	// output reads dep's at build time only, so its closure is itself).
	other := filepath.Join(tmp, "other")
	o := strings.TrimSpace(string(out))
	fetch := Cache{URL: c.URL, NixOptions: append(nixtest.NoSubstituters(), "store", other)}
	if validIn(t, other, o) {
		t.Fatalf("%s valid in a fresh store before the fetch", o)
	}
	if err := fetch.FetchPaths(context.Background(), []string{o}); err != nil {
		t.Fatal(err)
	}
	if !validIn(t, other, o) {
		t.Errorf("after FetchPaths(%s): not valid in the other store", o)
	}
}

func TestErrors(t *testing.T) {
	nixtest.Require(t)
	ctx := context.Background()
	c := Cache{URL: "file://" + t.TempDir(), NixOptions: nixtest.NoSubstituters()}
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"not a drv", func() error { return c.PushDerivations(ctx, []string{"/etc/passwd"}) }, `"/etc/passwd" is not a .drv`},
		{"a drv as an output", func() error {
			return c.FetchPaths(ctx, []string{"/nix/store/00000000000000000000000000000000-nothing.drv"})
		}, "is not an output path"},
		{"output missing from the cache", func() error {
			return c.FetchPaths(ctx, []string{"/nix/store/00000000000000000000000000000000-nothing"})
		}, "nix copy --from " + c.URL + " (1 paths"},
		{"missing from the cache", func() error {
			return c.FetchDerivations(ctx, []string{"/nix/store/00000000000000000000000000000000-nothing.drv"})
		}, "nix copy --from " + c.URL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if err := c.PushDerivations(ctx, nil); err != nil {
		t.Errorf("PushDerivations(nil) = %v, want nil (nothing to copy)", err)
	}
}
