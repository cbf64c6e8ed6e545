// Package closure discovers a set of derivations' whole dependency closure
// by reading the .drv files themselves (go-nix's ATerm parser), many at a
// time, instead of one Nix process per derivation.
package closure

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Drv is one derivation with what routing and scheduling need.
type Drv struct {
	Path   string
	ID     string // eventlog.DrvID(Path)
	Name   string
	System string
	// Outputs maps output names to store paths.
	Outputs                map[string]string
	FixedOutput            bool
	PreferLocalBuild       bool
	RequiredSystemFeatures []string
	InputDrvs              []string // .drv paths, sorted
}

// Walk reads the closure of roots and returns every derivation in it once,
// each after all of its inputs; ties are broken by path, so the order is
// the same on every run.
func Walk(ctx context.Context, roots []string) ([]Drv, error) {
	w, err := walk(ctx, roots, workers())
	if err != nil {
		return nil, err
	}
	return w.order(), nil
}

// Invalid reports which of the store paths are not valid (not built or
// substituted) in the local store.
func Invalid(ctx context.Context, paths []string) (map[string]bool, error) {
	invalid := map[string]bool{}
	const chunk = 2000 // far below ARG_MAX with store paths of ~80 bytes
	for start := 0; start < len(paths); start += chunk {
		end := min(start+chunk, len(paths))
		args := append([]string{"--check-validity", "--print-invalid"}, paths[start:end]...)
		cmd := exec.CommandContext(ctx, "nix-store", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("nix-store --check-validity: %v: %s", err, strings.TrimSpace(stderr.String()))
		}
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				invalid[line] = true
			}
		}
	}
	return invalid, nil
}
