package checker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// packages are a check's built packages: their outputs and closure.
type packages struct {
	outputs []string
	closure []string
}

// binDirs are the outputs' bin directories, for PATH.
func (p *packages) binDirs() []string {
	if p == nil {
		return nil
	}
	var dirs []string
	for _, o := range p.outputs {
		if st, err := os.Stat(filepath.Join(o, "bin")); err == nil && st.IsDir() {
			dirs = append(dirs, filepath.Join(o, "bin"))
		}
	}
	return dirs
}

// closureKey names the whole closure (store paths are content- or
// input-addressed: the same paths are the same packages).
func (p *packages) closureKey() string {
	if p == nil {
		return ""
	}
	h := sha256.Sum256([]byte(strings.Join(p.closure, "\n")))
	return hex.EncodeToString(h[:])
}

// packagesMissing is a package the check needs that did not build or is
// not in its job: the check cannot run.
type packagesMissing struct{ msg string }

func (e *packagesMissing) Error() string { return e.msg }

// pollPackages is how often the packages' jobset is looked at while it
// builds.
const pollPackages = time.Second

// packages waits until the job holding q's packages concluded and returns
// their outputs. The packages were evaluated by the evaluator (under its
// limits) and built by the builders like any job: nothing here evaluates
// Nix.
func (c *checker) packages(ctx context.Context, q *eventsv1.CheckQueued) (*packages, error) {
	want := q.GetPackages()
	if want == nil || len(want.GetAttrs()) == 0 {
		return nil, nil
	}
	var concluded *eventsv1.JobsetConcluded
	for concluded == nil {
		recs, _, err := c.cfg.Events.Load(ctx, eventlog.Jobset, q.GetPackagesJobsetId())
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if f := r.Event.GetJobsetEvalFailed(); f != nil {
				return nil, &packagesMissing{fmt.Sprintf("the packages' job %s did not evaluate: %s", want.GetJob(), f.GetError())}
			}
			if cc := r.Event.GetJobsetConcluded(); cc != nil {
				concluded = cc
			}
		}
		if concluded == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pollPackages):
			}
		}
	}
	results := map[string]*eventsv1.AttrResult{}
	for _, r := range concluded.GetResults() {
		results[r.GetAttr()] = r
	}
	var drvs []string
	for _, attr := range want.GetAttrs() {
		r := results[attr]
		switch {
		case r == nil && concluded.GetResultsOmitted() > 0:
			return nil, &packagesMissing{fmt.Sprintf("package %s is not listed in job %s's conclusion (too large a job: give the packages a job of their own)", attr, want.GetJob())}
		case r == nil:
			return nil, &packagesMissing{fmt.Sprintf("package %s is not an attribute of job %s", attr, want.GetJob())}
		case r.GetState() != "succeeded" || r.GetDrvPath() == "":
			return nil, &packagesMissing{fmt.Sprintf("package %s of job %s did not build (%s)", attr, want.GetJob(), r.GetState())}
		}
		drvs = append(drvs, r.GetDrvPath())
	}
	if c.cfg.Cache != nil {
		// A store of its own: the .drv closure first (to name the
		// outputs), then the outputs the builders pushed.
		if err := c.cfg.Cache.FetchDerivations(ctx, drvs); err != nil {
			return nil, fmt.Errorf("fetch the packages' derivations: %w", err)
		}
	}
	outputs, err := c.nixStore(ctx, append([]string{"--query", "--outputs"}, drvs...)...)
	if err != nil {
		return nil, err
	}
	if c.cfg.Cache != nil {
		if err := c.cfg.Cache.FetchPaths(ctx, outputs); err != nil {
			return nil, fmt.Errorf("fetch the packages: %w", err)
		}
	}
	closure, err := c.nixStore(ctx, append([]string{"--query", "--requisites"}, outputs...)...)
	if err != nil {
		return nil, err
	}
	sort.Strings(closure)
	return &packages{outputs: outputs, closure: closure}, nil
}

func (c *checker) nixStore(ctx context.Context, args ...string) ([]string, error) {
	var opts []string
	for i := 0; i+1 < len(c.cfg.NixOptions); i += 2 {
		opts = append(opts, "--option", c.cfg.NixOptions[i], c.cfg.NixOptions[i+1])
	}
	out, err := exec.CommandContext(ctx, "nix-store", append(opts, args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store %s: %w", strings.Join(args[:2], " "), gitErr(err))
	}
	return strings.Fields(string(out)), nil
}
