// Package nixeval evaluates a job's Nix file into attribute → derivation
// path, the way Hydra reads release files: every attribute of the top-level
// set, nested sets only when they say recurseForDerivations. One failing
// attribute does not lose the others.
//
// With nix-eval-jobs on PATH, it evaluates (in parallel, with its own
// per-attribute error handling). Without it (Nix 2.8 from Debian ships
// none), one nix-instantiate call evaluates everything, guarding each
// attribute with builtins.tryEval; errors tryEval cannot catch (type
// errors, missing attributes, ...) abort that call, and then each
// attribute is evaluated by a call of its own so the error lands on the
// attribute that has it.
package nixeval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog/text"
)

// Options says what to evaluate.
type Options struct {
	Dir  string // the checkout
	File string // relative to Dir
	Attr string // optional dotted attribute path inside the file
	// Args are passed to the file's function, as --argstr would.
	Args map[string]string
	// NixOptions are name, value pairs given to Nix as --option name value.
	NixOptions []string
	// EvalJobs is the nix-eval-jobs to use; empty looks it up on PATH,
	// "-" never uses it.
	EvalJobs string
	// Workers is nix-eval-jobs' --workers (default 2).
	Workers int
	// MemoryLimit bounds the address space of every Nix process of the
	// evaluation (RLIMIT_AS, set by sh's ulimit before exec: this machine
	// has cgroup v1 only), in bytes; 0 is no limit. A process that runs
	// out of it fails the whole evaluation with ErrMemoryLimit. The time
	// limit is the caller's context deadline: on it, the process tree is
	// killed.
	MemoryLimit int64
}

// Attr is one evaluated attribute.
type Attr struct {
	Path    string // dotted attribute path; "" when the file is one derivation
	DrvPath string
	Error   string
}

// Evaluate evaluates the job. An error means nothing could be evaluated
// (the file is missing, does not parse, or is not an attribute set or
// derivation); per-attribute failures are in the returned attributes.
func Evaluate(ctx context.Context, o Options) ([]Attr, error) {
	file := filepath.Join(o.Dir, o.File)
	if st, err := os.Stat(file); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: no such file in the checkout", o.File)
	}
	root := []string{}
	if o.Attr != "" {
		root = strings.Split(o.Attr, ".")
	}
	e := &evaluator{o: o, file: file, root: root}
	evalJobs := o.EvalJobs
	if evalJobs == "" {
		evalJobs, _ = exec.LookPath("nix-eval-jobs")
	}
	var attrs []Attr
	var err error
	if evalJobs != "" && evalJobs != "-" {
		attrs, err = e.evalJobs(ctx, evalJobs)
	} else {
		attrs, err = e.walk(ctx, root, true)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Path < attrs[j].Path })
	return attrs, nil
}

type evaluator struct {
	o    Options
	file string
	root []string
}

// prelude defines, from the parameters, `top` (the selected value) and
// `walk path value` (a list of { path; drv; } or { path; error; }).
const prelude = `
let
  p = builtins.fromJSON %s;
  raw = import p.file;
  fargs = builtins.functionArgs raw;
  called = if !(builtins.isFunction raw) then raw
    else if fargs == { } then raw p.args
    else raw (builtins.intersectAttrs fargs p.args);
  select = v: path: builtins.foldl' (s: n: s.${n}) v path;
  # p.root is the job's attribute path; p.at is where this call starts
  # (deeper than p.root when the work was split per attribute).
  top = select called p.at;
  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";
  recurses = path: v: path == p.root ||
    (let r = builtins.tryEval (v.recurseForDerivations or false); in r.success && r.value == true);
  walk = path: v:
    let t = builtins.tryEval v; in
    if !t.success then [ { inherit path; error = "evaluation failed (a throw or an assertion)"; } ]
    else if isDrv t.value then
      (let d = builtins.tryEval t.value.drvPath; in
        [ (if d.success then { inherit path; drv = d.value; }
           else { inherit path; error = "evaluating drvPath failed (a throw or an assertion)"; }) ])
    else if builtins.isAttrs t.value && recurses path t.value then
      builtins.concatLists (map (n: walk (path ++ [ n ]) (t.value.${n})) (builtins.attrNames t.value))
    else [ ];
in
`

type params struct {
	File string            `json:"file"`
	Args map[string]string `json:"args"`
	Root []string          `json:"root"`
	At   []string          `json:"at"`
}

// expr builds an expression over the prelude, starting at path at.
func (e *evaluator) expr(at []string, body string) string {
	args := e.o.Args
	if args == nil {
		args = map[string]string{}
	}
	if at == nil {
		at = []string{}
	}
	js, _ := json.Marshal(params{File: e.file, Args: args, Root: e.root, At: at})
	return fmt.Sprintf(prelude, nixString(string(js))) + body
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

type result struct {
	Path  []string `json:"path"`
	Drv   string   `json:"drv"`
	Error string   `json:"error"`
}

// walk evaluates everything under path in one call; when that call dies of
// an error tryEval cannot catch, it splits the work per attribute.
func (e *evaluator) walk(ctx context.Context, path []string, isRoot bool) ([]Attr, error) {
	var res []result
	err := e.eval(ctx, e.expr(path, "walk p.at top"), &res)
	if err == nil {
		if isRoot && len(res) == 0 {
			// Nothing found: fine for an empty set, not for a list or a number.
			var kind string
			err := e.eval(ctx, e.expr(path, "builtins.typeOf top"), &kind)
			if whole(ctx, err) {
				return nil, err
			}
			if err == nil && kind != "set" {
				return nil, fmt.Errorf("evaluating %s: it is a %s; want an attribute set or a derivation", e.o.File, kind)
			}
		}
		attrs := make([]Attr, 0, len(res))
		for _, r := range res {
			a := Attr{Path: strings.Join(r.Path, "."), DrvPath: r.Drv, Error: r.Error}
			if a.Error != "" {
				// tryEval hides the message; one more call per failing
				// attribute (few, normally) gets Nix's own words.
				var err error
				if a.Error, err = e.explain(ctx, r.Path, a.Error); err != nil {
					return nil, err
				}
			}
			attrs = append(attrs, a)
		}
		return attrs, nil
	}
	if whole(ctx, err) {
		return nil, err
	}
	// Which names are there to split over? A failure here is the
	// attribute's own error (or, at the root, the file's).
	var names []string
	namesErr := e.eval(ctx, e.expr(path, `let v = top; in if isDrv v || !(builtins.isAttrs v) || !(recurses p.at v) then null else builtins.attrNames v`), &names)
	if namesErr != nil || names == nil {
		if whole(ctx, namesErr) {
			return nil, namesErr
		}
		if isRoot {
			if namesErr == nil {
				namesErr = err
			}
			return nil, fmt.Errorf("evaluating %s: %w", e.o.File, namesErr)
		}
		return []Attr{{Path: strings.Join(path, "."), Error: err.Error()}}, nil
	}
	var attrs []Attr
	for _, n := range names {
		child := append(append([]string{}, path...), n)
		sub, err := e.walk(ctx, child, false)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, sub...)
	}
	return attrs, nil
}

// evalJobs runs nix-eval-jobs over the selected value: one JSON object per
// attribute on stdout, {"attr": ..., "drvPath": ...} or {"attr": ...,
// "error": ...}.
func (e *evaluator) evalJobs(ctx context.Context, bin string) ([]Attr, error) {
	workers := e.o.Workers
	if workers <= 0 {
		workers = 2
	}
	args := []string{"--workers", strconv.Itoa(workers)}
	for i := 0; i+1 < len(e.o.NixOptions); i += 2 {
		args = append(args, "--option", e.o.NixOptions[i], e.o.NixOptions[i+1])
	}
	args = append(args, "--expr", e.expr(e.root, "top"))
	stdout, stderr, err := e.run(ctx, bin, args)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if e.o.MemoryLimit > 0 && outOfMemory(stderr.String()) {
			return nil, ErrMemoryLimit
		}
		return nil, fmt.Errorf("evaluating %s with nix-eval-jobs: %s", e.o.File, trimError(stderr.String()))
	}
	var attrs []Attr
	for _, line := range bytes.Split(stdout.Bytes(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var j struct {
			Attr     string   `json:"attr"`
			AttrPath []string `json:"attrPath"`
			DrvPath  string   `json:"drvPath"`
			Error    string   `json:"error"`
		}
		if err := json.Unmarshal(line, &j); err != nil {
			return nil, fmt.Errorf("nix-eval-jobs printed a line that is not JSON: %q", line)
		}
		path := j.AttrPath
		if path == nil && j.Attr != "" {
			path = strings.Split(j.Attr, ".")
		}
		if e.o.MemoryLimit > 0 && outOfMemory(j.Error) {
			return nil, ErrMemoryLimit
		}
		full := append(append([]string{}, e.root...), path...)
		attrs = append(attrs, Attr{Path: strings.Join(full, "."), DrvPath: j.DrvPath, Error: trimError(j.Error)})
		if j.Error == "" {
			attrs[len(attrs)-1].Error = ""
		}
	}
	return attrs, nil
}

// explain evaluates the attribute at path without tryEval and returns
// Nix's error message, or fallback if it does not fail that way. An error
// is one of the whole evaluation (a limit reached, ctx ended).
func (e *evaluator) explain(ctx context.Context, path []string, fallback string) (string, error) {
	var ignored any
	err := e.eval(ctx, e.expr(path, "builtins.seq (if isDrv top then top.drvPath else top) null"), &ignored)
	if whole(ctx, err) {
		return "", err
	}
	if err == nil {
		return fallback, nil
	}
	return err.Error(), nil
}

// whole reports whether err ends the whole evaluation rather than being
// one attribute's error: ctx ended (cancelled, or the time limit) or the
// memory limit was reached.
func whole(ctx context.Context, err error) bool {
	return err != nil && (ctx.Err() != nil || errors.Is(err, ErrMemoryLimit))
}

// run runs a Nix command in the checkout, under the memory limit, in a
// process group of its own; on cancellation its whole process tree is
// killed.
func (e *evaluator) run(ctx context.Context, bin string, args []string) (stdout, stderr *bytes.Buffer, err error) {
	if e.o.MemoryLimit > 0 {
		// sh sets the limit on itself and execs Nix (same pid), so the
		// limit holds from Nix's first instruction on.
		kib := strconv.FormatInt(max(e.o.MemoryLimit/1024, 1), 10)
		args = append([]string{"-c", `ulimit -v "$1" && shift && exec "$@"`, "sh", kib, bin}, args...)
		bin = "/bin/sh"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.o.Dir
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { killTree(cmd.Process.Pid); return nil }
	cmd.WaitDelay = 5 * time.Second
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return stdout, stderr, cmd.Run()
}

// eval runs nix-instantiate --eval --strict --json on expr into out.
// Read-write mode lets drvPath write the .drv files to the store.
func (e *evaluator) eval(ctx context.Context, expr string, out any) error {
	args := []string{"--eval", "--strict", "--json", "--read-write-mode"}
	for i := 0; i+1 < len(e.o.NixOptions); i += 2 {
		args = append(args, "--option", e.o.NixOptions[i], e.o.NixOptions[i+1])
	}
	args = append(args, "-E", expr)
	stdout, stderr, err := e.run(ctx, "nix-instantiate", args)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if e.o.MemoryLimit > 0 && outOfMemory(stderr.String()) {
				return ErrMemoryLimit
			}
			return errors.New(trimError(stderr.String()))
		}
		return fmt.Errorf("nix-instantiate: %w", err)
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("nix-instantiate printed something that is not the expected JSON: %w", err)
	}
	return nil
}

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// maxError bounds one error message, in bytes.
const maxError = 2000

// outOfMemory reports whether Nix's stderr says it ran out of memory.
// Measured on Nix 2.8 under RLIMIT_AS: Boehm GC warns "Out of Memory!
// Heap size: ... Returning NULL!" and Nix ends with the line "error: out
// of memory" (exit status 1). A throw "out of memory" prints that line
// too: a job can only misreport its own failure that way.
func outOfMemory(stderr string) bool {
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(ansiRE.ReplaceAllString(line, ""))
		if line == "error: out of memory" || strings.HasPrefix(line, "GC Warning: Out of Memory!") || strings.Contains(line, "std::bad_alloc") {
			return true
		}
	}
	return false
}

// trimError keeps Nix's message and its location, without colours and the
// long trace of our own wrapper expression.
func trimError(s string) string {
	s = ansiRE.ReplaceAllString(s, "")
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "(use '--show-trace'") {
			continue
		}
		keep = append(keep, strings.TrimRight(line, " "))
	}
	// Valid UTF-8 and cut at a rune boundary: the message goes into a
	// fact, and protobuf refuses a string that is not UTF-8.
	out := text.Bound(strings.TrimSpace(strings.Join(keep, "\n")), maxError)
	if out == "" {
		out = "nix-instantiate failed without a message"
	}
	return out
}
