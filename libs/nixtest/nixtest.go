// Package nixtest is the one precondition of tests that run Nix, and the
// options that keep such tests offline.
//
// Require fails, never skips: a suite whose Nix tests are skipped passes
// while testing nothing, and a wrong verdict is worse than a slow one.
// `make test` installs Nix first (scripts/ensure-nix.sh).
package nixtest

import (
	"os/exec"
	"strings"
	"testing"
)

// Tools are the Nix programs ekaci runs, the ones scripts/ensure-nix.sh
// makes sure of (nix itself for `nix store ping` of remote builders).
func Tools() []string { return []string{"nix", "nix-build", "nix-instantiate", "nix-store"} }

// Require fails tb, saying how to install Nix, unless every one of Tools
// is on PATH.
func Require(tb testing.TB) {
	tb.Helper()
	var missing []string
	for _, tool := range Tools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		tb.Fatalf("%s not on PATH: this test needs Nix; `make test` installs it (scripts/ensure-nix.sh), or apt-get install -y nix-bin",
			strings.Join(missing, ", "))
	}
}

// NoSubstituters is the Nix option, as a name and a value (the form of
// ekaci's NixOptions), that asks no binary cache. Offline, each Nix call
// would otherwise lose about 5 s trying the public one.
func NoSubstituters() []string { return []string{"substituters", ""} }

// NoSubstitutersArgs is NoSubstituters as command-line arguments
// (--option substituters ”), for running nix-build or nix-instantiate.
func NoSubstitutersArgs() []string { return []string{"--option", "substituters", ""} }
