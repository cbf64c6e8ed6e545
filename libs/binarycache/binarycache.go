// Package binarycache moves store paths between the local Nix store and a
// binary cache with `nix copy`, the way ekaci's stages share what they
// evaluated and built without sharing a Nix store: the evaluator pushes
// each job's .drv closure, a builder fetches the closure of the
// derivation it is asked to build, and pushes what it built (to ekaci's
// cache, and to an upstream one when the operator names it).
//
// Every call is one `nix copy` process bounded by the context; its error
// says which cache, which direction and what Nix printed (the tail).
package binarycache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// ErrNoNix means the nix command is not on PATH.
var ErrNoNix = errors.New("nix not found")

// Cache is one binary cache, named by a Nix store URL
// (http://ekaci-cache:8081, s3://bucket?region=..., file:///srv/cache).
type Cache struct {
	URL string
	// NixOptions are Nix options for every copy, name then value (e.g.
	// "require-sigs", "false").
	NixOptions []string
}

// PushDerivations copies the .drv files drvPaths and their whole closure
// (input derivations and sources) to c; outputs are not built.
func (c Cache) PushDerivations(ctx context.Context, drvPaths []string) error {
	return c.copy(ctx, "--to", true, drvPaths)
}

// PushOutputs copies the outputs of the derivations drvPaths, which must
// be built already (nix copy would build them otherwise), and their
// runtime closure to c.
func (c Cache) PushOutputs(ctx context.Context, drvPaths []string) error {
	return c.copy(ctx, "--to", false, drvPaths)
}

// FetchDerivations copies the .drv files drvPaths and their closure from c
// into the local store. Signatures are not checked: the .drv closure is
// the input a build is asked for, and a builder checks a path by its
// store hash when it reads it.
func (c Cache) FetchDerivations(ctx context.Context, drvPaths []string) error {
	return c.copy(ctx, "--from", true, drvPaths)
}

// FetchPaths copies the store paths paths (built outputs, not .drv
// files) and their runtime closure from c into the local store, building
// nothing: a path the cache does not have fails the copy. A checker
// fetches its checks' packages so, with a store of its own.
func (c Cache) FetchPaths(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if !strings.HasPrefix(p, "/nix/store/") || strings.HasSuffix(p, ".drv") {
			return fmt.Errorf("copy --from %s: %q is not an output path in /nix/store", c.URL, p)
		}
	}
	return c.run(ctx, "--from", false, paths)
}

func (c Cache) copy(ctx context.Context, dir string, derivation bool, paths []string) error {
	for _, p := range paths {
		if !strings.HasPrefix(p, "/nix/store/") || !strings.HasSuffix(p, ".drv") {
			return fmt.Errorf("copy %s %s: %q is not a .drv in /nix/store", dir, c.URL, p)
		}
	}
	return c.run(ctx, dir, derivation, paths)
}

// run is one `nix copy DIR URL [--derivation] PATHS...`, tried up to
// copyAttempts times.
func (c Cache) run(ctx context.Context, dir string, derivation bool, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	bin, err := exec.LookPath("nix")
	if err != nil {
		return fmt.Errorf("copy %s %s: %w", dir, c.URL, ErrNoNix)
	}
	args := []string{"--extra-experimental-features", "nix-command", "copy", dir, c.URL}
	if derivation {
		args = append(args, "--derivation")
	}
	if dir == "--from" {
		args = append(args, "--no-check-sigs")
	}
	for i := 0; i+1 < len(c.NixOptions); i += 2 {
		args = append(args, "--option", c.NixOptions[i], c.NixOptions[i+1])
	}
	args = append(args, paths...)
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err = cmd.Run(); err == nil {
			return nil
		}
		what := "outputs of"
		switch {
		case derivation:
			what = "derivations"
		case !strings.HasSuffix(paths[0], ".drv"):
			what = "paths"
		}
		err = fmt.Errorf("nix copy %s %s (%d %s, attempt %d): %w: %s", dir, c.URL, len(paths), what, attempt, err, tail(out.String(), 2048))
		// Nix 2.8 processes sharing a store race on its narinfo cache
		// (~/.cache/nix/binary-cache-v6.sqlite: "constraint failed"),
		// and a cache may be restarting: worth two more tries.
		if attempt == copyAttempts || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}

// copyAttempts is how many times one copy is tried.
const copyAttempts = 3

// tail is the last max bytes of s, cut at a line start when one is near.
func tail(s string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	s = s[len(s)-max:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < 200 {
		s = s[i+1:]
	}
	return "..." + s
}
