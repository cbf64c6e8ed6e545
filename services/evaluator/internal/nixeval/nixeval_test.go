package nixeval

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekaci/ekaci/libs/nixtest"
)

var offline = nixtest.NoSubstituters()

func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const lib = `
  mk = name: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${name} > $out" ]; };
`

func TestEvaluate(t *testing.T) {
	nixtest.Require(t)
	dir := write(t, map[string]string{
		"default.nix": `let` + lib + `in {
  a = mk "a";
  nested = { recurseForDerivations = true; b = mk "b"; deeper = { c = mk "c"; }; notADrv = 3; };
  hidden = { d = mk "d"; };
  thrown = throw "this one is broken";
  asserted = assert false; mk "never";
  typeError = 1 + "two";
  missing = { }.nope;
  number = 42;
}`,
		"fn.nix":   `{ who, greeting ? "hello" }: let` + lib + `in { hi = mk "${greeting}-${who}"; }`,
		"one.nix":  `let` + lib + `in mk "single"`,
		"sel.nix":  `let` + lib + `in { x = { y = { z = mk "z"; }; }; other = throw "not selected"; }`,
		"bad.nix":  `{ a = ; }`,
		"list.nix": `[ 1 ]`,
	})
	ctx := context.Background()
	t.Run("hydra-style recursion with failures isolated", func(t *testing.T) {
		attrs, err := Evaluate(ctx, Options{Dir: dir, File: "default.nix", NixOptions: offline})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]Attr{}
		var paths []string
		for _, a := range attrs {
			got[a.Path] = a
			paths = append(paths, a.Path)
		}
		want := []string{"a", "asserted", "missing", "nested.b", "thrown", "typeError"}
		if strings.Join(paths, " ") != strings.Join(want, " ") {
			t.Fatalf("attributes %v, want %v (sorted; hidden, deeper and numbers skipped)", paths, want)
		}
		for _, p := range []string{"a", "nested.b"} {
			if !strings.HasSuffix(got[p].DrvPath, ".drv") || got[p].Error != "" {
				t.Errorf("%s = %+v, want a drv path", p, got[p])
			}
			if _, err := os.Stat(got[p].DrvPath); err != nil {
				t.Errorf("%s: .drv not written to the store: %v", p, err)
			}
		}
		for p, msg := range map[string]string{"thrown": "error: this one is broken", "asserted": "assertion 'false' failed", "typeError": "cannot add", "missing": "attribute 'nope' missing"} {
			if got[p].DrvPath != "" || !strings.Contains(got[p].Error, msg) {
				t.Errorf("%s = %+v, want an error containing %q", p, got[p], msg)
			}
		}
	})
	tests := []struct {
		name    string
		opts    Options
		want    map[string]string // path -> drv name suffix
		wantErr string
	}{
		{"function with args", Options{File: "fn.nix", Args: map[string]string{"who": "world", "unused": "x"}}, map[string]string{"hi": "-hello-world.drv"}, ""},
		{"single derivation", Options{File: "one.nix"}, map[string]string{"": "-single.drv"}, ""},
		{"attribute path", Options{File: "sel.nix", Attr: "x.y"}, map[string]string{"x.y.z": "-z.drv"}, ""},
		{"missing file", Options{File: "nope.nix"}, nil, "nope.nix: no such file"},
		{"syntax error", Options{File: "bad.nix"}, nil, "syntax error"},
		{"not a set", Options{File: "list.nix"}, nil, "evaluating list.nix"},
		{"missing function arg", Options{File: "fn.nix"}, nil, "who"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Dir, tt.opts.NixOptions = dir, offline
			attrs, err := Evaluate(ctx, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					// A missing argument is an error of the whole file.
					t.Fatalf("err = %v, attrs %+v; want error containing %q", err, attrs, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(attrs) != len(tt.want) {
				t.Fatalf("attrs = %+v, want %v", attrs, tt.want)
			}
			for _, a := range attrs {
				if suffix, ok := tt.want[a.Path]; !ok || !strings.HasSuffix(a.DrvPath, suffix) {
					t.Errorf("%q = %+v, want drv ending %q", a.Path, a, suffix)
				}
			}
		})
	}
}

func TestNixString(t *testing.T) {
	nixtest.Require(t)
	for _, s := range []string{`plain`, `q"uote`, `back\slash`, "${interp}", "line\nbreak\ttab", `$${x}`} {
		out, err := exec.Command("nix-instantiate", "--eval", "--json", "-E", nixString(s)).Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var back string
		if err := jsonUnmarshal(out, &back); err != nil || back != s {
			t.Errorf("%q round-tripped to %q (%v)", s, back, err)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestNixEvalJobs drives the nix-eval-jobs path with a stand-in script (the
// real tool does not exist for Nix 2.8): it must get our expression and
// options, and its JSON lines must become attributes under the job's root.
func TestNixEvalJobs(t *testing.T) {
	dir := write(t, map[string]string{"release.nix": "{ }"})
	argsFile := filepath.Join(t.TempDir(), "args")
	fake := filepath.Join(t.TempDir(), "nix-eval-jobs")
	script := `#!/bin/sh
printf '%s\n' "$@" > ` + argsFile + `
echo '{"attr":"hello","attrPath":["hello"],"drvPath":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello.drv","system":"x86_64-linux"}'
echo '{"attr":"sub.broken","attrPath":["sub","broken"],"error":"\u001b[31;1merror:\u001b[0m it is broken"}'
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	attrs, err := Evaluate(context.Background(), Options{Dir: dir, File: "release.nix", Attr: "pkgs", EvalJobs: fake, Workers: 3, NixOptions: offline})
	if err != nil {
		t.Fatal(err)
	}
	want := []Attr{
		{Path: "pkgs.hello", DrvPath: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello.drv"},
		{Path: "pkgs.sub.broken", Error: "error: it is broken"},
	}
	if len(attrs) != 2 || attrs[0] != want[0] || attrs[1] != want[1] {
		t.Fatalf("attrs = %+v\nwant %+v", attrs, want)
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	args := string(b)
	for _, w := range []string{"--workers\n3\n", "--option\nsubstituters\n\n", "--expr\n", `\"root\":[\"pkgs\"]`, filepath.Join(dir, "release.nix")} {
		if !strings.Contains(args, w) {
			t.Errorf("nix-eval-jobs args lack %q:\n%s", w, args)
		}
	}
}
