package nixtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fatalRecorder stands in for a test: it records Fatalf instead of ending
// the test that runs Require.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	withTools := func(t *testing.T, tools ...string) string {
		dir := t.TempDir()
		for _, tool := range tools {
			if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tt := range []struct {
		name  string
		tools []string
		want  string // "" when Require must pass
	}{
		{name: "all present", tools: Tools()},
		{name: "none", want: "nix, nix-build, nix-instantiate, nix-store not on PATH"},
		{name: "nix-store missing", tools: []string{"nix", "nix-build", "nix-instantiate"}, want: "nix-store not on PATH"},
		{name: "nix missing", tools: []string{"nix-build", "nix-instantiate", "nix-store"}, want: "nix not on PATH"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", withTools(t, tt.tools...))
			r := &fatalRecorder{TB: t}
			Require(r)
			switch {
			case tt.want == "" && r.fatal != "":
				t.Fatalf("Require failed: %s", r.fatal)
			case tt.want != "" && !strings.HasPrefix(r.fatal, tt.want):
				t.Fatalf("Require: %q, want it to start with %q", r.fatal, tt.want)
			case tt.want != "" && !strings.Contains(r.fatal, "scripts/ensure-nix.sh"):
				t.Fatalf("Require: %q does not say how to install Nix", r.fatal)
			}
		})
	}
}
