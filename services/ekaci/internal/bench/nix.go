package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/ekaci"
	"github.com/ekaci/ekaci/services/evaluator"
)

var offline = []string{"--option", "substituters", ""}

func fodHash(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// writeGraph writes g as default.nix (with a fresh salt) into dir and
// returns the attribute names of its leaves.
func writeGraph(g *graphgen.Graph, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	salt := fmt.Sprint(time.Now().UnixNano())
	if err := g.WriteNix(&b, salt, fodHash); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), b.Bytes(), 0o644); err != nil {
		return nil, err
	}
	var leaves []string
	for _, id := range g.Leaves() {
		leaves = append(leaves, graphgen.Attr(id))
	}
	return leaves, nil
}

func run(ctx context.Context, dir string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		tail := errb.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args[:min(len(args), 6)], " "), err, tail)
	}
	return out.String(), nil
}

// Closure reads the .drv files of an n-derivation generated graph (edges
// included) three ways in one run: ekaci's parallel go-nix reader, one
// `nix show-derivation` process per derivation (the way ekaci's original
// design read them; timed on a sample), and one `nix show-derivation --recursive` over
// the whole closure.
func Closure(ctx context.Context, dir string, n int, sample int) (Result, error) {
	res := Result{Scenario: "closure", N: n, Extra: map[string]float64{}}
	g := graphgen.Generate(graphgen.Params{N: n, Seed: 7, Systems: []string{"x"}, Shares: []float64{1}})
	leaves, err := writeGraph(g, dir)
	if err != nil {
		return res, err
	}
	args := append(append([]string{}, offline...), "default.nix")
	for _, l := range leaves {
		args = append(args, "-A", l)
	}
	out, err := run(ctx, dir, "nix-instantiate", args...)
	if err != nil {
		return res, err
	}
	var roots []string
	for _, l := range strings.Fields(out) {
		p, _, _ := strings.Cut(l, "!")
		roots = append(roots, p)
	}
	start := time.Now()
	drvs, edges, err := evaluator.WalkClosure(ctx, roots)
	if err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(drvs) / res.Seconds
	res.N, res.Edges = drvs, edges

	nixArgs := []string{"--extra-experimental-features", "nix-command", "show-derivation"}
	start = time.Now()
	all, err := run(ctx, dir, "nix", append(append(nixArgs, "--recursive"), roots...)...)
	if err != nil {
		return res, err
	}
	recursive := time.Since(start).Seconds()
	res.Extra["recursive_drv_per_s"] = float64(drvs) / recursive
	if !strings.Contains(all, roots[0]) {
		return res, fmt.Errorf("nix show-derivation --recursive did not print %s", roots[0])
	}
	// One process per derivation, on a sample of them.
	start = time.Now()
	for _, r := range roots[:min(sample, len(roots))] {
		if _, err := run(ctx, dir, "nix", append(nixArgs, r)...); err != nil {
			return res, err
		}
	}
	res.Extra["per_process_drv_per_s"] = float64(min(sample, len(roots))) / time.Since(start).Seconds()
	return res, nil
}

// RealBuilds builds an n-derivation generated graph for real with `ekaci
// run`'s code path (embedded NATS, every stage), then the same graph (a
// fresh salt, so nothing is cached) with one `nix-build --keep-going -j2`.
func RealBuilds(ctx context.Context, dir string, n int) (Result, error) {
	res := Result{Scenario: "real-builds", N: n, Extra: map[string]float64{}}
	g := graphgen.Generate(graphgen.Params{N: n, Roots: max(5, n/50), Layers: 12, Seed: 11, Systems: []string{"x"}, Shares: []float64{1}})
	res.Edges = g.Stats().Edges
	repo := filepath.Join(dir, "repo")
	if _, err := writeGraph(g, repo); err != nil {
		return res, err
	}
	if err := os.MkdirAll(filepath.Join(repo, ".ekaci"), 0o755); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(repo, ".ekaci", "config.json"), []byte(`{"jobs": {"graph": {"file": "default.nix"}}}`), 0o644); err != nil {
		return res, err
	}
	for _, a := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-q", "-m", "graph"}} {
		if _, err := run(ctx, repo, "git", a...); err != nil {
			return res, err
		}
	}
	start := time.Now()
	// The bench's checker gets uids of its own: a checker kills whatever
	// runs under its uids when it starts, and another ekaci (a test, a
	// server) may be running checks under the default ones.
	app, err := ekaci.Start(ctx, ekaci.Config{DataDir: filepath.Join(dir, "data"), NatsPort: -1, MaxJobs: 2, FODMaxJobs: 1, CheckUIDBase: 62200,
		NoOutputTimeout: time.Minute, NixOptions: []string{"substituters", ""}, Logger: zerolog.Nop()})
	if err != nil {
		return res, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Run(rctx) }()
	cr, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo})
	if err == nil {
		var id string
		if id, err = ekaci.Submit(ctx, app.Events(), cr); err == nil {
			var out *ekaci.Outcome
			if out, err = ekaci.Wait(ctx, app.Events(), id, ioDiscard{}); err == nil && out.Conclusion.String() != "CONCLUSION_SUCCESS" {
				err = fmt.Errorf("ekaci run concluded %v: %s", out.Conclusion, out.Summary)
			}
		}
	}
	cancel()
	<-done
	res.Seconds = time.Since(start).Seconds()
	steps := builderSteps(app.Metrics().Registry())
	app.Close(context.Background())
	if err != nil {
		return res, err
	}
	// What judging by the store cost: validity questions and GC roots,
	// per Nix invocation (a batch, or a derivation built again alone).
	inv := steps[telemetry.BuilderStepInvocation]
	res.Extra["invocations"] = inv.count
	res.Extra["validity_questions"] = steps[telemetry.BuilderStepValidity].count
	res.Extra["validity_s"] = steps[telemetry.BuilderStepValidity].sum
	res.Extra["roots_s"] = steps[telemetry.BuilderStepRoots].sum
	if inv.count > 0 {
		res.Extra["validity_ms_per_invocation"] = 1000 * steps[telemetry.BuilderStepValidity].sum / inv.count
		res.Extra["roots_ms_per_invocation"] = 1000 * steps[telemetry.BuilderStepRoots].sum / inv.count
	}

	again := filepath.Join(dir, "again")
	leaves, err := writeGraph(g, again)
	if err != nil {
		return res, err
	}
	args := append(append([]string{}, offline...), "--keep-going", "-j2", "--no-out-link", "default.nix")
	for _, l := range leaves {
		args = append(args, "-A", l)
	}
	start = time.Now()
	if _, err := run(ctx, again, "nix-build", args...); err != nil {
		return res, err
	}
	res.Extra["nix_build_s"] = time.Since(start).Seconds()
	res.Rate = float64(n) / res.Seconds
	return res, nil
}

type ioDiscard struct{}

func (ioDiscard) Write(b []byte) (int, error) { return len(b), nil }

type stepTotal struct{ count, sum float64 }

// builderSteps reads the builder's ekaci_builder_nix_step_seconds: count
// and sum by step.
func builderSteps(reg prometheus.Gatherer) map[string]stepTotal {
	out := map[string]stepTotal{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "ekaci_builder_nix_step_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "step" {
					out[l.GetValue()] = stepTotal{count: float64(m.GetHistogram().GetSampleCount()), sum: m.GetHistogram().GetSampleSum()}
				}
			}
		}
	}
	return out
}
