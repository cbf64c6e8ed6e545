package closure

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/nixtest"
)

// instantiate writes expr to a file and returns attribute → .drv path.
func instantiate(t testing.TB, expr string, attrs ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "default.nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	args := append(nixtest.NoSubstitutersArgs(), file)
	for _, a := range attrs {
		args = append(args, "-A", a)
	}
	b, err := exec.Command("nix-instantiate", args...).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != len(attrs) {
		t.Fatalf("nix-instantiate printed %v for %v", lines, attrs)
	}
	for i, a := range attrs {
		// nix-instantiate may print "path!out" for outputs; keep the .drv.
		out[a], _, _ = strings.Cut(lines[i], "!")
	}
	return out
}

const graph = `
let
  salt = "@SALT@";
  mk = name: inputs: extra: derivation ({ inherit name inputs salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${name} > $out" ]; } // extra);
in rec {
  base = mk "base" [ ] { };
  left = mk "left" [ base ] { preferLocalBuild = true; };
  right = mk "right" [ base ] { requiredSystemFeatures = [ "kvm" "big-parallel" ]; };
  top = mk "top" [ left right ] { outputs = [ "out" "dev" ]; };
  fod = derivation { name = "fod"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "printf hi > $out" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"; inherit salt; };
  usesFod = mk "uses-fod" [ fod ] { };
  structured = derivation { name = "structured"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ];
    __structuredAttrs = true; preferLocalBuild = true; requiredSystemFeatures = [ "kvm" ]; inherit salt; };
}
`

func salted(t testing.TB) string {
	return strings.ReplaceAll(graph, "@SALT@", fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()))
}

func TestWalk(t *testing.T) {
	nixtest.Require(t)
	drvs := instantiate(t, salted(t), "base", "left", "right", "top", "fod", "usesFod", "structured")
	got, err := Walk(context.Background(), []string{drvs["top"], drvs["usesFod"], drvs["structured"], drvs["left"]})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Fatalf("closure has %d derivations, want 7: %+v", len(got), got)
	}
	pos := map[string]int{}
	byName := map[string]Drv{}
	for i, d := range got {
		pos[d.Path] = i
		byName[d.Name] = d
	}
	// Inputs before dependents.
	for _, d := range got {
		for _, in := range d.InputDrvs {
			if pos[in] >= pos[d.Path] {
				t.Errorf("%s comes before its input %s", d.Name, in)
			}
		}
	}
	check := func(name string, fod, prefer bool, features []string, inputs []string, outputs []string) {
		t.Helper()
		d, ok := byName[name]
		if !ok {
			t.Fatalf("%s missing from the closure", name)
		}
		if d.Path != drvs[map[string]string{"uses-fod": "usesFod"}[name]] && d.Path != drvs[name] {
			t.Errorf("%s: path %s", name, d.Path)
		}
		if d.FixedOutput != fod || d.PreferLocalBuild != prefer || !slices.Equal(d.RequiredSystemFeatures, features) {
			t.Errorf("%s: fod=%v prefer=%v features=%v; want %v %v %v", name, d.FixedOutput, d.PreferLocalBuild, d.RequiredSystemFeatures, fod, prefer, features)
		}
		var ins []string
		for _, in := range inputs {
			ins = append(ins, drvs[in])
		}
		slices.Sort(ins)
		if !slices.Equal(d.InputDrvs, ins) {
			t.Errorf("%s: inputs %v, want %v", name, d.InputDrvs, ins)
		}
		var outs []string
		for o := range d.Outputs {
			outs = append(outs, o)
		}
		slices.Sort(outs)
		if !slices.Equal(outs, outputs) {
			t.Errorf("%s: outputs %v, want %v", name, outs, outputs)
		}
		if d.System == "" || d.ID == "" {
			t.Errorf("%s: system %q id %q", name, d.System, d.ID)
		}
	}
	check("base", false, false, nil, nil, []string{"out"})
	check("left", false, true, nil, []string{"base"}, []string{"out"})
	check("right", false, false, []string{"kvm", "big-parallel"}, []string{"base"}, []string{"out"})
	check("top", false, false, nil, []string{"left", "right"}, []string{"dev", "out"})
	check("fod", true, false, nil, nil, []string{"out"})
	check("structured", false, true, []string{"kvm"}, nil, []string{"out"})

	// The same closure, walked again, comes out in the same order.
	again, err := Walk(context.Background(), []string{drvs["structured"], drvs["left"], drvs["usesFod"], drvs["top"]})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].Path != again[i].Path {
			t.Fatalf("order differs at %d: %s vs %s", i, got[i].Path, again[i].Path)
		}
	}
}

func TestWalkMissingDrv(t *testing.T) {
	_, err := Walk(context.Background(), []string{"/nix/store/00000000000000000000000000000000-gone.drv"})
	if err == nil || !strings.Contains(err.Error(), "gone.drv does not exist") {
		t.Fatalf("err = %v", err)
	}
	bad := filepath.Join(t.TempDir(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bad.drv")
	if err := os.WriteFile(bad, []byte("Derive(garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Walk(context.Background(), []string{bad}); err == nil || !strings.Contains(err.Error(), "not a valid .drv file") {
		t.Fatalf("err = %v", err)
	}
}

func TestInvalid(t *testing.T) {
	nixtest.Require(t)
	drvs := instantiate(t, salted(t), "base")
	d, err := Walk(context.Background(), []string{drvs["base"]})
	if err != nil {
		t.Fatal(err)
	}
	out := d[0].Outputs["out"]
	inv, err := Invalid(context.Background(), []string{out})
	if err != nil || !inv[out] {
		t.Fatalf("unbuilt output: invalid=%v err=%v", inv, err)
	}
	if b, err := exec.Command("nix-build", append(nixtest.NoSubstitutersArgs(), "--no-out-link", drvs["base"])...).CombinedOutput(); err != nil {
		t.Fatalf("nix-build: %v\n%s", err, b)
	}
	inv, err = Invalid(context.Background(), []string{out})
	if err != nil || inv[out] {
		t.Fatalf("built output: invalid=%v err=%v", inv, err)
	}
	if inv, err := Invalid(context.Background(), nil); err != nil || len(inv) != 0 {
		t.Fatalf("no paths: %v %v", inv, err)
	}
}

func TestDrvID(t *testing.T) {
	for _, p := range []string{
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw615-g528-l6.drv",
		"/tmp/x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bad.drv",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-rel.drv",
		"/nix/store/AZaz09__AZaz09__AZaz09__AZaz09__-x.drv",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw615-g528-l6",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw61-short.drv",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw6155-long.drv",
		"/nix/store/0015xjk3gji79725vq7i-yzp1i0hw615-dash.drv",
		"/nix/store/0015xjk3gji79725vq7i.yzp1i0hw615-dot.drv",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw615-x.drv/",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw615-.drv",
		"/nix/store/0015xjk3gji79725vq7ihyzp1i0hw615.drv",
		"/", "", ".drv",
	} {
		id, err := drvID(p)
		wantID, wantErr := eventlog.DrvID(p)
		if id != wantID || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Errorf("drvID(%q) = %q, %v, want %q, %v", p, id, err, wantID, wantErr)
		}
	}
}
