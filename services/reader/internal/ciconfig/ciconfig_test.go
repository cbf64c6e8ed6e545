package ciconfig

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// update rewrites the refusals' golden files: go test -run Refusals -update.
var update = flag.Bool("update", false, "rewrite testdata/refusals/*.golden from the current refusals")

// checkGolden compares got with the golden file at path (rewritten with
// -update).
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (create it with go test -run Refusals -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("refusal differs from %s (go test -run Refusals -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func checkout(t *testing.T, files map[string]string) string {
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

func TestReadGoodConfig(t *testing.T) {
	dir := checkout(t, map[string]string{
		FileName: `{
  "jobs": {
    "pkgs": {"file": "./nix/release.nix", "attr": "x86.all", "allow_eval_failures": false, "args": {"system": "x86_64-linux"}},
    "app": {"file": "default.nix"}
  }
}`,
		"nix/release.nix": "{}", "default.nix": "{}",
	})
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Jobs: []Job{
			{Name: "app", File: "default.nix", AllowEvalFailures: true},
			{Name: "pkgs", File: "nix/release.nix", Attr: "x86.all", AllowEvalFailures: false, Args: map[string]string{"system": "x86_64-linux"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestReadChecks(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []Check
		jobs         int
	}{
		{"with packages and limits", `{"jobs": {"tools": {"file": "default.nix"}}, "checks": {
  "test": {"command": "./test.sh", "allow_network": true, "timeout_seconds": 30, "packages": {"job": "tools", "attrs": ["sc", "jq"]}},
  "lint": {"command": "./lint.sh"}}}`, []Check{
			{Name: "lint", Command: "./lint.sh", TimeoutSeconds: DefaultCheckTimeout},
			{Name: "test", Command: "./test.sh", AllowNetwork: true, TimeoutSeconds: 30, PackagesJob: "tools", PackagesAttrs: []string{"sc", "jq"}},
		}, 1},
		{"checks alone", `{"checks": {"fmt": {"command": "true"}}}`, []Check{{Name: "fmt", Command: "true", TimeoutSeconds: DefaultCheckTimeout}}, 0},
		{"no checks", `{"jobs": {"tools": {"file": "default.nix"}}, "checks": {}}`, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(checkout(t, map[string]string{FileName: tc.config, "default.nix": "{}"}))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Checks, tc.want) || len(got.Jobs) != tc.jobs {
				t.Fatalf("Read = %+v, %d jobs; want %+v, %d jobs", got.Checks, len(got.Jobs), tc.want, tc.jobs)
			}
		})
	}
}

func TestMissingConfigMeansNotConfigured(t *testing.T) {
	if _, err := Read(checkout(t, map[string]string{"README": "x"})); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
}

func TestRefusals(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "evil.nix"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		config   string
		extra    map[string]string
		symlinks map[string]string // link -> target
		path     string
		msg      string
	}{
		{name: "syntax", config: "{\n  \"jobs\": {,\n}", path: "", msg: "line 2, column 12"},
		{name: "not an object", config: `[1]`, path: "", msg: "want an object, found an array"},
		{name: "unknown top key", config: `{"jobs": {"a": {"file": "a.nix"}}, "job": {}}`, path: "job", msg: "unknown key: want one of jobs"},
		{name: "no jobs", config: `{}`, path: "", msg: `has no "jobs"`},
		{name: "empty jobs", config: `{"jobs": {}}`, path: "jobs", msg: "at least one job"},
		{name: "jobs not object", config: `{"jobs": ["a"]}`, path: "jobs", msg: "want an object, found an array"},
		{name: "job not object", config: `{"jobs": {"a": "a.nix"}}`, path: "jobs.a", msg: `want an object, found a string "a.nix"`},
		{name: "bad job name", config: `{"jobs": {"a b": {"file": "a.nix"}}}`, path: "jobs.a b", msg: "bad name"},
		{name: "unknown job key", config: `{"jobs": {"a": {"file": "a.nix", "atr": "x"}}}`, path: "jobs.a.atr", msg: "unknown key: want one of file, attr, allow_eval_failures, args"},
		{name: "missing file", config: `{"jobs": {"a": {}}}`, path: "jobs.a.file", msg: "missing"},
		{name: "file wrong type", config: `{"jobs": {"a": {"file": 3}}}`, path: "jobs.a.file", msg: "want a string, found the number 3"},
		{name: "file absolute", config: `{"jobs": {"a": {"file": "/etc/passwd"}}}`, path: "jobs.a.file", msg: "is absolute"},
		{name: "file escapes", config: `{"jobs": {"a": {"file": "../x.nix"}}}`, path: "jobs.a.file", msg: "leaves the repository"},
		{name: "file escapes after clean", config: `{"jobs": {"a": {"file": "nix/../../x.nix"}}}`, path: "jobs.a.file", msg: "leaves the repository"},
		{name: "file absent", config: `{"jobs": {"a": {"file": "nope.nix"}}}`, path: "jobs.a.file", msg: "does not exist"},
		{name: "file is dir", config: `{"jobs": {"a": {"file": "nix"}}}`, extra: map[string]string{"nix/x": ""}, path: "jobs.a.file", msg: "not a regular file"},
		{name: "file symlink out", config: `{"jobs": {"a": {"file": "evil.nix"}}}`, symlinks: map[string]string{"evil.nix": filepath.Join(outside, "evil.nix")}, path: "jobs.a.file", msg: "symlink that leaves"},
		{name: "dir symlink out", config: `{"jobs": {"a": {"file": "lib/evil.nix"}}}`, symlinks: map[string]string{"lib": outside}, path: "jobs.a.file", msg: "symlink that leaves"},
		{name: "allow_eval_failures type", config: `{"jobs": {"a": {"file": "a.nix", "allow_eval_failures": "no"}}}`, path: "jobs.a.allow_eval_failures", msg: `want true or false, found a string "no"`},
		{name: "attr type", config: `{"jobs": {"a": {"file": "a.nix", "attr": ["x"]}}}`, path: "jobs.a.attr", msg: "want a string, found an array"},
		{name: "args type", config: `{"jobs": {"a": {"file": "a.nix", "args": ["x"]}}}`, path: "jobs.a.args", msg: "want an object"},
		{name: "arg value type", config: `{"jobs": {"a": {"file": "a.nix", "args": {"n": 1}}}}`, path: "jobs.a.args.n", msg: "want a string, found the number 1"},
		{name: "duplicate job", config: `{"jobs": {"a": {"file": "a.nix"}, "a": {"file": "a.nix"}}}`, path: "jobs.a", msg: "appears twice"},
		{name: "check not object", config: `{"jobs": {"a": {"file": "a.nix"}}, "checks": {"lint": "./lint.sh"}}`, path: "checks.lint", msg: `want an object, found a string "./lint.sh"`},
		{name: "bad check name", config: `{"checks": {"../x": {"command": "true"}}}`, path: "checks.../x", msg: "bad name"},
		{name: "unknown check key", config: `{"checks": {"lint": {"command": "true", "network": true}}}`, path: "checks.lint.network", msg: "unknown key: want one of command, allow_network, timeout_seconds, packages"},
		{name: "check without command", config: `{"checks": {"lint": {}}}`, path: "checks.lint.command", msg: "missing"},
		{name: "empty command", config: `{"checks": {"lint": {"command": "  "}}}`, path: "checks.lint.command", msg: "is empty"},
		{name: "long command", config: `{"checks": {"lint": {"command": "` + strings.Repeat("x", MaxCommand+1) + `"}}}`, path: "checks.lint.command", msg: "want at most 4096"},
		{name: "network type", config: `{"checks": {"lint": {"command": "x", "allow_network": "yes"}}}`, path: "checks.lint.allow_network", msg: "want true or false"},
		{name: "timeout not whole", config: `{"checks": {"lint": {"command": "x", "timeout_seconds": 1.5}}}`, path: "checks.lint.timeout_seconds", msg: "whole number"},
		{name: "timeout zero", config: `{"checks": {"lint": {"command": "x", "timeout_seconds": 0}}}`, path: "checks.lint.timeout_seconds", msg: "whole number"},
		{name: "packages of no job", config: `{"jobs": {"a": {"file": "a.nix"}}, "checks": {"lint": {"command": "x", "packages": {"job": "tools", "attrs": ["sc"]}}}}`, path: "checks.lint.packages.job", msg: `"tools" is not a job`},
		{name: "packages without attrs", config: `{"jobs": {"a": {"file": "a.nix"}}, "checks": {"lint": {"command": "x", "packages": {"job": "a"}}}}`, path: "checks.lint.packages.attrs", msg: "missing"},
		{name: "packages empty attrs", config: `{"jobs": {"a": {"file": "a.nix"}}, "checks": {"lint": {"command": "x", "packages": {"job": "a", "attrs": []}}}}`, path: "checks.lint.packages.attrs", msg: "want 1 to 64"},
		{name: "packages unknown key", config: `{"jobs": {"a": {"file": "a.nix"}}, "checks": {"lint": {"command": "x", "packages": {"job": "a", "attr": "x"}}}}`, path: "checks.lint.packages.attr", msg: "unknown key"},
		{name: "invalid UTF-8 value", config: "{\"jobs\": {\"a\": {\"file\": \"a.nix\", \"allow_eval_failures\": \"\xff\xfe\"}}}", path: "jobs.a.allow_eval_failures", msg: "want true or false, found a string \"\uFFFD\""},
		{name: "long value shown short", config: `{"jobs": {"a": {"file": "a.nix", "attr": ` + strings.Repeat("9", 5000) + `}}}`, path: "jobs.a.attr", msg: "want a string, found the number 999"},
	}
	t.Run("no stale golden files", func(t *testing.T) {
		rows := map[string]bool{}
		for _, tt := range tests {
			rows[strings.ReplaceAll(tt.name, " ", "-")+".golden"] = true
		}
		entries, err := os.ReadDir(filepath.Join("testdata", "refusals"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !rows[e.Name()] {
				t.Errorf("testdata/refusals/%s has no row in the table: delete it", e.Name())
			}
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{FileName: tt.config, "a.nix": "{}"}
			for k, v := range tt.extra {
				files[k] = v
			}
			dir := checkout(t, files)
			for link, target := range tt.symlinks {
				if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Read(dir)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if ce.Path != tt.path || !strings.Contains(ce.Msg, tt.msg) {
				t.Fatalf("got path %q msg %q; want path %q msg containing %q", ce.Path, ce.Msg, tt.path, tt.msg)
			}
			if !utf8.ValidString(err.Error()) || len(ce.Msg) > 200 {
				t.Fatalf("refusal is not valid UTF-8 or not short: %q", ce.Msg)
			}
			if !strings.HasPrefix(err.Error(), FileName+": ") {
				t.Fatalf("error %q does not start with the file name", err)
			}
			// The whole refusal, as the pull request author reads it.
			got := strings.ReplaceAll(err.Error(), outside, "$OUTSIDE") + "\n"
			checkGolden(t, filepath.Join("testdata", "refusals", strings.ReplaceAll(tt.name, " ", "-")+".golden"), got)
		})
	}
}

func TestConfigFileItselfRefused(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "config.json"), []byte(`{"jobs": {"a": {"file": "a.nix"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := checkout(t, map[string]string{"a.nix": "{}", ".ekaci/keep": ""})
	if err := os.Symlink(filepath.Join(outside, "config.json"), filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	var ce *Error
	if _, err := Read(dir); !errors.As(err, &ce) || !strings.Contains(ce.Msg, "symlink that leaves") {
		t.Fatalf("config symlinked out of the checkout: err = %v", err)
	}
	big := checkout(t, map[string]string{FileName: `{"jobs": {}, "x": "` + strings.Repeat("a", MaxSize) + `"}`})
	if _, err := Read(big); !errors.As(err, &ce) || !strings.Contains(ce.Msg, "larger than") {
		t.Fatalf("oversized config: err = %v", err)
	}
}
