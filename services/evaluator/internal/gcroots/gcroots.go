// Package gcroots makes evaluated .drv files garbage-collector roots, so
// that a Nix GC between evaluation and build (an automatic min-free one,
// say) cannot delete what the builders are about to build. A rooted .drv
// keeps its whole closure of input derivations and sources alive, so the
// attributes' derivations are enough.
//
// Nix 2.8 has no command that roots an existing .drv without building it
// (`nix-store --add-root -r` builds); nix-instantiate roots the derivations
// it instantiates, and `import` of a .drv gives back that derivation, so one
// nix-instantiate over `[ (import (builtins.storePath "X.drv")) ... ]`
// roots them all without evaluating the job again. Roots are indirect:
// Nix links /nix/var/nix/gcroots/auto/<hash> to <dir>/drv, <dir>/drv-2,
// ... (in the order given), each a symlink to its .drv. Removing <dir>
// unroots them; the next GC drops the stale links in auto/ itself.
package gcroots

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Add roots drvPaths under dir (created if missing), replacing roots of
// the same names from an earlier call.
func Add(ctx context.Context, dir string, drvPaths []string, nixOptions []string) error {
	if len(drvPaths) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gc roots %s: %w", dir, err)
	}
	var expr strings.Builder
	expr.WriteString("[\n")
	for _, p := range drvPaths {
		if !strings.HasSuffix(p, ".drv") {
			return fmt.Errorf("gc root %s: not a .drv", p)
		}
		fmt.Fprintf(&expr, "  (import (builtins.storePath %s))\n", nixString(p))
	}
	expr.WriteString("]\n")
	args := []string{"--add-root", filepath.Join(dir, "drv"), "--indirect"}
	for i := 0; i+1 < len(nixOptions); i += 2 {
		args = append(args, "--option", nixOptions[i], nixOptions[i+1])
	}
	// The expression comes on stdin: one -E argument is capped at 128 KiB
	// (MAX_ARG_STRLEN), about 1,500 derivations.
	args = append(args, "-")
	cmd := exec.CommandContext(ctx, "nix-instantiate", args...)
	cmd.Stdin = strings.NewReader(expr.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("gc roots in %s: nix-instantiate: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	if n := strings.Count(string(out), "\n"); n != len(drvPaths) {
		return fmt.Errorf("gc roots in %s: nix-instantiate made %d roots for %d derivations", dir, n, len(drvPaths))
	}
	return nil
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
