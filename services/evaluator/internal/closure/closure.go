// Package closure discovers a set of derivations' whole dependency closure
// by reading the .drv files themselves (go-nix's ATerm parser), many at a
// time, instead of one Nix process per derivation.
package closure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/ekaci/ekaci/libs/eventlog"
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
	w := &walker{seen: map[string]bool{}, drvs: map[string]*Drv{}, neededBy: map[string]string{}}
	workers := runtime.GOMAXPROCS(0) * 4
	jobs := make(chan string, 1024)
	var pending sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failed.Store(true)
	}

	enqueue := func(path, by string) {
		w.mu.Lock()
		if w.seen[path] {
			w.mu.Unlock()
			return
		}
		w.seen[path] = true
		if by != "" {
			w.neededBy[path] = by
		}
		w.mu.Unlock()
		pending.Add(1)
		// Never block a worker on a full queue: that could deadlock when
		// every worker is enqueueing.
		select {
		case jobs <- path:
		default:
			go func() { jobs <- path }()
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for path := range jobs {
				if ctx.Err() == nil && !failed.Load() {
					d, err := read(path)
					if err != nil {
						w.mu.Lock()
						by := w.neededBy[path]
						w.mu.Unlock()
						if by != "" {
							err = fmt.Errorf("%w (an input of %s)", err, by)
						}
						fail(err)
					} else {
						w.mu.Lock()
						w.drvs[path] = d
						w.mu.Unlock()
						for _, in := range d.InputDrvs {
							enqueue(in, path)
						}
					}
				}
				pending.Done()
			}
		}()
	}
	for _, r := range roots {
		enqueue(r, "")
	}
	pending.Wait()
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return topo(w.drvs), nil
}

type walker struct {
	mu       sync.Mutex
	seen     map[string]bool
	drvs     map[string]*Drv
	neededBy map[string]string
}

// topo orders inputs before dependents (Kahn's algorithm, smallest path
// first among the ready ones).
func topo(drvs map[string]*Drv) []Drv {
	indeg := make(map[string]int, len(drvs))
	users := make(map[string][]string, len(drvs))
	for p, d := range drvs {
		indeg[p] += 0
		for _, in := range d.InputDrvs {
			indeg[p]++
			users[in] = append(users[in], p)
		}
	}
	var ready []string
	for p, n := range indeg {
		if n == 0 {
			ready = append(ready, p)
		}
	}
	sort.Strings(ready)
	out := make([]Drv, 0, len(drvs))
	for len(ready) > 0 {
		p := ready[0]
		ready = ready[1:]
		out = append(out, *drvs[p])
		var next []string
		for _, u := range users[p] {
			if indeg[u]--; indeg[u] == 0 {
				next = append(next, u)
			}
		}
		if len(next) > 0 {
			sort.Strings(next)
			ready = mergeSorted(ready, next)
		}
	}
	return out
}

func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i] <= b[j] {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return append(append(out, a[i:]...), b[j:]...)
}

// read parses one .drv file.
func read(path string) (*Drv, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("derivation %s does not exist in the store", path)
		}
		return nil, fmt.Errorf("derivation %s: %w", path, err)
	}
	pd, err := derivation.ReadDerivation(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("derivation %s: not a valid .drv file: %w", path, err)
	}
	id, err := eventlog.DrvID(path)
	if err != nil {
		return nil, err
	}
	d := &Drv{Path: path, ID: id, System: pd.Platform, Name: pd.Name()}
	if d.Name == "" {
		d.Name = nameFromPath(path)
	}
	d.Outputs = make(map[string]string, len(pd.Outputs))
	for n, o := range pd.Outputs {
		d.Outputs[n] = o.Path
	}
	if o := pd.Outputs["out"]; len(pd.Outputs) == 1 && o != nil && o.HashAlgorithm != "" {
		d.FixedOutput = true
	}
	for in := range pd.InputDerivations {
		d.InputDrvs = append(d.InputDrvs, in)
	}
	sort.Strings(d.InputDrvs)
	prefer, features := pd.Env["preferLocalBuild"], pd.Env["requiredSystemFeatures"]
	d.PreferLocalBuild = prefer == "1"
	d.RequiredSystemFeatures = strings.Fields(features)
	// Structured attributes carry both in __json with their real types.
	if js, ok := pd.Env["__json"]; ok {
		var s struct {
			PreferLocalBuild       bool     `json:"preferLocalBuild"`
			RequiredSystemFeatures []string `json:"requiredSystemFeatures"`
		}
		if err := json.Unmarshal([]byte(js), &s); err == nil {
			d.PreferLocalBuild = d.PreferLocalBuild || s.PreferLocalBuild
			if len(s.RequiredSystemFeatures) > 0 {
				d.RequiredSystemFeatures = s.RequiredSystemFeatures
			}
		}
	}
	return d, nil
}

// nameFromPath is the name part of /nix/store/<hash>-<name>.drv.
func nameFromPath(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), ".drv")
	if _, name, ok := strings.Cut(base, "-"); ok {
		return name
	}
	return base
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
