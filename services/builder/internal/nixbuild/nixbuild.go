// Package nixbuild realises derivations with Nix and judges each one by
// the Nix store: succeeded (every output valid, whether built now, before
// or by someone else), failed (its own build failed: a builder's exit
// status, a hash mismatch, a reference check), or interrupted (a timeout,
// a cancellation, an OOM kill, a dead Nix, or a fault of the machinery
// such as a garbage-collected .drv).
//
// It promises that
//   - every output of every derivation is realised (`nix-store --realise`,
//     which, unlike `nix-build X.drv`, does not stop at the output `out`);
//   - a verdict never comes from text: after each Nix invocation the
//     validity of every output of every derivation it was given is asked of
//     the store (Store), and a derivation that is not all valid is
//     classified from Nix's own records of that derivation's build
//     activity (see Judge and parser); nothing a builder prints can change
//     another derivation's verdict or classification;
//   - a failure of the invocation is not a failure of the derivations in
//     it: the ones Nix did not judge are built again, in halves down to
//     alone, and only alone does what stopped Nix become their verdict;
//   - the log stream is read without pause whatever a build prints: lines
//     of any length are split for OnLine and the tail, each attempt's log
//     stops at MaxLogBytes (with a notice; the build goes on) and the tail
//     is bounded in bytes and valid UTF-8;
//   - when Realise stops a build (cancellation) or Nix dies, nix-store and
//     the builder processes it started are gone when Realise returns, and
//     nix-store gets SIGTERM if this process dies (Pdeathsig); a Tracker
//     lets the next life of the process end whatever survived;
//   - Realise returns an error only when nothing could be started.
package nixbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/ekaci/ekaci/libs/telemetry"
)

// MaxLineBytes is the longest piece of a line handed to OnLine (and kept
// in Tail); a longer line arrives as several consecutive pieces. The log
// file keeps lines whole. 64 KiB stays well below NATS's 1 MiB max payload
// for live publishing.
const MaxLineBytes = 64 << 10

const (
	defaultTailLines = 30
	// DefaultTailBytes bounds Result.Tail: a report (and the fact the
	// recorder makes of it) must fit the server's max payload (1 MiB in
	// the mesh) with room to spare.
	DefaultTailBytes = 32 << 10
	// DefaultMaxLogBytes is each attempt's log cap.
	DefaultMaxLogBytes = 256 << 20
	defaultKillGrace   = 5 * time.Second
	// readerDrain is how long we wait for EOF on stderr after nix-store
	// exited; only a process that escaped with a copy of it delays it.
	readerDrain = 2 * time.Second
)

// snapshotEvery is how often the process groups below nix-store are
// re-read (a handful of /proc reads each time).
var snapshotEvery = 250 * time.Millisecond

// testHookSnapshot, when set, sees every refreshed group set (tests only).
var testHookSnapshot func(groups []int)

// Options tune a realisation. The zero value builds locally with Nix
// defaults, no timeouts and no log file.
type Options struct {
	// Builders is the Nix machines spec passed as --builders. Empty means
	// local only: --builders '' is still passed so no build-remote hook runs.
	Builders string
	// NixOptions are extra name/value pairs, each passed as
	// --option name value, e.g. {"substituters", ""}.
	NixOptions []string
	// MaxJobs is --max-jobs for remote builds (with Builders; 0 there
	// means never build here). Local invocations always build one
	// derivation at a time (a batch's parallelism is several invocations):
	// that is what lets each build's end be read from Nix's counters.
	MaxJobs int
	// NoOutputTimeout and TotalTimeout apply to each derivation, through
	// Nix's own max-silent-time and timeout (whole seconds, rounded up).
	NoOutputTimeout time.Duration
	TotalTimeout    time.Duration
	// KillGrace is how long nix-store gets after SIGTERM to stop its
	// builders before everything gets SIGKILL; 0 means 5s.
	KillGrace time.Duration
	// LogPath is where the full log goes, zstd-compressed, parent
	// directories created, replaced if present. Empty: no log file.
	// (Build only; Realise takes it per Job.)
	LogPath string
	// OnLine gets every output line without its newline (Build only;
	// Realise takes it per Job). It is called from one goroutine at a
	// time, never after Realise returns, and may keep the slice. It should
	// be quick: a slow OnLine slows the build.
	OnLine func(line []byte)
	// TailLines is how many last lines Result.Tail keeps; 0 means 30.
	TailLines int
	// TailBytes bounds Result.Tail in bytes; 0 means DefaultTailBytes.
	TailBytes int
	// MaxLogBytes caps each derivation's log (file and OnLine); past it a
	// notice line is written and the rest is dropped while the build goes
	// on. 0 means DefaultMaxLogBytes; < 0 no cap.
	MaxLogBytes int64
	// Store answers validity questions; nil: one is made per call (and
	// closed after).
	Store *Store
	// Tracker, when set, records each running nix-store so that the next
	// life of this process can end what this one left running.
	Tracker *Tracker
	// Root, when set, is given the outputs of the derivations judged
	// succeeded, once per store question that judged them (those valid
	// before any build, then those of each invocation, early successes
	// included), before Realise returns: it makes them GC roots. While
	// Nix runs, what it built is rooted by Nix itself (its temporary
	// roots, until it exits).
	Root func(ctx context.Context, outPaths []string)
	// Timed, when set, is told how long each step of the machinery took:
	// TimedInvocation (one nix-store --realise), TimedValidity (one
	// validity question), TimedRoots (one Root call). It must not block.
	Timed func(step string, took time.Duration)
}

// Steps given to Options.Timed: the labels of the builder's
// ekaci_builder_nix_step_seconds.
const (
	TimedInvocation = telemetry.BuilderStepInvocation
	TimedValidity   = telemetry.BuilderStepValidity
	TimedRoots      = telemetry.BuilderStepRoots
)

// timed tells o.Timed how long since start step took.
func (o Options) timed(step string, start time.Time) {
	if o.Timed != nil {
		o.Timed(step, time.Since(start))
	}
}

// invalid asks the store which of paths are not valid, timed.
func (r *realisation) invalid(ctx context.Context, paths []string) (map[string]bool, error) {
	defer r.o.timed(TimedValidity, time.Now())
	return r.store.Invalid(ctx, paths)
}

// Job is one derivation of a realisation.
type Job struct {
	DrvPath string
	// LogPath and OnLine are Options.LogPath and Options.OnLine, per job.
	LogPath string
	OnLine  func(line []byte)
	// OnStart, when set, is called once, when Nix starts building the
	// derivation (its build activity begins), from the goroutine reading
	// Nix's log: it must not block. A derivation Nix never builds (its
	// outputs valid already, its .drv gone) never gets the call.
	OnStart func()
	// OnDone, when set, gets the derivation's Result as soon as it is
	// known, in a batch, before the rest of the batch is built: once Nix's
	// counters end its build and the store says every output is valid
	// (succeeded), or not and its own timing rules out a timeout (failed).
	// The same Result is in Realise's answer. It must not block.
	OnDone func(Result)
}

// Outcome is how a build ended. The zero value is no outcome, so an unset
// Result never reads as a success.
type Outcome int

const (
	Succeeded Outcome = iota + 1
	Failed
	Interrupted
)

func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case Interrupted:
		return "interrupted"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Interruption says why an Interrupted build stopped.
type Interruption int

const (
	None Interruption = iota
	// Timeout: Nix's max-silent-time or timeout stopped the build.
	Timeout
	// Cancelled: the context was done.
	Cancelled
	// OutOfMemory: Nix died of a SIGKILL we did not send while the
	// kernel OOM killer was active; a heuristic, see oom.go.
	OutOfMemory
	// ProcessDeath: Nix died of a signal we did not send, or stopped
	// before it finished the build.
	ProcessDeath
	// Infrastructure: the machinery failed, not the derivation: its .drv
	// is gone from the store, Nix refused it or could not reach its
	// store, Nix hung.
	Infrastructure
)

func (i Interruption) String() string {
	switch i {
	case None:
		return "none"
	case Timeout:
		return "timeout"
	case Cancelled:
		return "cancelled"
	case OutOfMemory:
		return "out-of-memory"
	case ProcessDeath:
		return "process-death"
	case Infrastructure:
		return "infrastructure"
	}
	return "Interruption(" + strconv.Itoa(int(i)) + ")"
}

// Result is what happened to one derivation.
type Result struct {
	Outcome Outcome
	// ExitCode is Nix's exit status for a failed build built alone (100
	// a builder failed, 102 a hash mismatch, 1 another error such as a
	// missing output), 100 for a failed build in a batch, 101 for a
	// timeout, 0 on success, -1 when Nix was stopped or died.
	ExitCode     int
	Interruption Interruption
	// Tail is the last TailLines output lines, joined by "\n", at most
	// TailBytes long, valid UTF-8.
	Tail     string
	Duration time.Duration
	// LogPath is the job's LogPath, for convenience.
	LogPath string
	// LogErr is set when the log file could not be fully written or
	// closed; the outcome stands regardless.
	LogErr error
	// OutPaths are every output path of the derivation (sorted by output
	// name), on success only.
	OutPaths []string
	// Detail says in a sentence why an interrupted build stopped.
	Detail string
	// Invocations is how many Nix invocations the derivation took part in
	// (more than one when an invocation failed and it was built again).
	Invocations int
	// Started says whether Nix started building it (OnStart was called).
	Started bool
}

func (o Options) withDefaults() Options {
	if o.TailLines <= 0 {
		o.TailLines = defaultTailLines
	}
	if o.TailBytes <= 0 {
		o.TailBytes = DefaultTailBytes
	}
	if o.MaxLogBytes == 0 {
		o.MaxLogBytes = DefaultMaxLogBytes
	}
	if o.KillGrace <= 0 {
		o.KillGrace = defaultKillGrace
	}
	return o
}

func (o Options) check() error {
	if len(o.NixOptions)%2 != 0 {
		return fmt.Errorf("%w: NixOptions has %d entries, want name/value pairs", ErrBadOptions, len(o.NixOptions))
	}
	if o.MaxJobs < 0 {
		return fmt.Errorf("%w: MaxJobs %d", ErrBadOptions, o.MaxJobs)
	}
	return nil
}

// Build realises one derivation with o (LogPath and OnLine included).
func Build(ctx context.Context, drvPath string, o Options) (Result, error) {
	res, err := Realise(ctx, []Job{{DrvPath: drvPath, LogPath: o.LogPath, OnLine: o.OnLine}}, o)
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// Realise builds jobs (independent derivations: none an input of another)
// and judges each by the store. Results are in jobs' order. The error is
// non-nil only when nothing could be started (bad options, no nix-store,
// a log file that cannot be created).
func Realise(ctx context.Context, jobs []Job, o Options) ([]Result, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if !strings.HasPrefix(j.DrvPath, "/") || !strings.HasSuffix(j.DrvPath, ".drv") {
			return nil, fmt.Errorf("%w: drv path %q", ErrBadOptions, j.DrvPath)
		}
	}
	bin, err := exec.LookPath("nix-store")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoNix, err)
	}
	js := make([]*job, len(jobs))
	for i, j := range jobs {
		lf, err := createLog(j.LogPath)
		if err != nil {
			for _, s := range js[:i] {
				s.log.file.discard()
			}
			return nil, err
		}
		js[i] = &job{Job: j, log: newJobLog(lf, j.OnLine, o)}
	}
	store := o.Store
	if store == nil {
		store = NewStore(o.NixOptions)
		defer store.Close()
	}
	start := time.Now()
	r := &realisation{bin: bin, o: o, store: store}
	r.prepare(ctx, js)
	var todo []*job
	for _, j := range js {
		if j.verdict == nil {
			todo = append(todo, j)
		}
	}
	if len(todo) > 0 {
		r.run(ctx, todo)
	}
	elapsed := time.Since(start)
	results := make([]Result, len(js))
	for i, j := range js {
		if j.result == nil {
			r.finish(j, elapsed)
		}
		results[i] = *j.result
	}
	return results, nil
}

// finish makes j's Result from its verdict and closes its log.
func (r *realisation) finish(j *job, elapsed time.Duration) {
	v := *j.verdict
	res := Result{Outcome: v.Outcome, Interruption: v.Interruption, ExitCode: v.ExitCode, Detail: v.Detail,
		LogPath: j.LogPath, Duration: j.took, Invocations: r.invocations[j], Started: !j.began.IsZero()}
	if res.Duration == 0 {
		res.Duration = elapsed
	}
	if v.Outcome == Succeeded {
		res.OutPaths = j.outputs
	}
	res.Tail = j.log.tailString()
	res.LogErr = j.log.close()
	j.result = &res
}

// earlyQuery bounds the validity question asked while Nix still runs; a
// store slow to answer then only delays the report to the batch's end.
const earlyQuery = 5 * time.Second

// early is called (from the log reader) when Nix's counters ended j's
// build, in a batch: if the store says every output is valid, j has
// succeeded, whatever the rest of the batch does; if not, and its own
// timing rules out Nix's timeouts, it failed. Either way its report need
// not wait for the batch (nor die with it in a crash). What needs the
// invocation's end (a possible timeout, Nix stopping mid-way) waits.
func (r *realisation) early(j *job, batch int) {
	if j.result != nil || len(j.outputs) == 0 || batch < 2 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), earlyQuery)
	defer cancel()
	invalid, err := r.invalid(ctx, j.outputs)
	if err != nil {
		return
	}
	switch {
	case len(invalid) == 0:
		j.verdict = &Verdict{Outcome: Succeeded}
	case j.countedDone:
		return // Nix says built, the store says not valid: the end decides
	default:
		inv := Invocation{Jobs: batch, Exit: 0x60 | 0x05} // as if some build timed out
		if r.o.NoOutputTimeout > 0 {
			inv.MaxSilent = time.Duration(wholeSeconds(r.o.NoOutputTimeout)) * time.Second
		}
		if r.o.TotalTimeout > 0 {
			inv.Timeout = time.Duration(wholeSeconds(r.o.TotalTimeout)) * time.Second
		}
		if t, _ := inv.timedOut(j.observed(invocation{inv: inv}, invalid)); t != notTimedOut {
			return // the invocation's end decides
		}
		v := Judge(j.observed(invocation{inv: inv}, invalid), inv)
		if v.Outcome != Failed {
			return
		}
		j.verdict = &v
	}
	r.finish(j, time.Since(j.startAt))
	if j.OnDone != nil {
		j.OnDone(*j.result)
	}
}

type realisation struct {
	bin         string
	o           Options
	store       *Store
	invocations map[*job]int
}

// prepare reads each .drv's outputs and asks the store, in one question,
// which .drv files and outputs are valid: a .drv that is gone is an
// infrastructure interruption before any build, and a derivation whose
// outputs are all valid already is a success without one.
func (r *realisation) prepare(ctx context.Context, js []*job) {
	r.invocations = map[*job]int{}
	var ask []string
	for _, j := range js {
		outs, err := readOutputs(j.DrvPath)
		if err != nil {
			j.verdict = &Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: -1,
				Detail: fmt.Sprintf("stopped: %v; not a build failure", err)}
			continue
		}
		j.outputs = outs
		ask = append(ask, j.DrvPath)
		ask = append(ask, outs...)
	}
	if len(ask) == 0 {
		return
	}
	invalid, err := r.invalid(context.WithoutCancel(ctx), ask)
	if err != nil {
		for _, j := range js {
			if j.verdict == nil {
				j.verdict = storeUnreachable(err)
			}
		}
		return
	}
	for _, j := range js {
		if j.verdict != nil {
			continue
		}
		j.drvValid = !invalid[j.DrvPath]
		o := Observed{DrvValid: j.drvValid, OutputsValid: true}
		for _, out := range j.outputs {
			if invalid[out] {
				o.OutputsValid = false
			}
		}
		if !o.DrvValid || o.OutputsValid {
			v := Judge(o, Invocation{Jobs: 1})
			j.verdict = &v
		}
	}
	r.root(ctx, js)
}

// root hands the outputs of js judged succeeded to Options.Root.
func (r *realisation) root(ctx context.Context, js []*job) {
	if r.o.Root == nil {
		return
	}
	var outs []string
	for _, j := range js {
		if j.verdict != nil && j.verdict.Outcome == Succeeded {
			outs = append(outs, j.outputs...)
		}
	}
	if len(outs) > 0 {
		start := time.Now()
		r.o.Root(ctx, outs)
		r.o.timed(TimedRoots, start)
	}
}

func storeUnreachable(err error) *Verdict {
	return &Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: -1,
		Detail: fmt.Sprintf("stopped: the Nix store could not be asked which outputs are valid: %v; not a build failure", err)}
}

// run realises js in one invocation, judges each by the store, and builds
// the ones Nix did not judge again, in halves, until each was alone.
func (r *realisation) run(ctx context.Context, js []*job) {
	for _, j := range js {
		r.invocations[j]++
	}
	started := time.Now()
	res, err := invoke(ctx, r.bin, js, r.o, r.early)
	r.o.timed(TimedInvocation, started)
	if err != nil {
		// Not even started (fork failed, the pipe could not be made).
		res = invocation{inv: Invocation{Jobs: len(js), Exit: -1}}
		res.other = []string{err.Error()}
	}
	ask := make([]string, 0, 2*len(js))
	for _, j := range js {
		ask = append(ask, j.outputs...)
	}
	invalid, qerr := r.invalid(context.WithoutCancel(ctx), ask)
	var again []*job
	for _, j := range js {
		if j.result != nil {
			continue // judged a success while Nix ran
		}
		if qerr != nil {
			j.verdict = storeUnreachable(qerr)
			continue
		}
		v := Judge(j.observed(res, invalid), res.inv)
		if v.Again {
			if len(js) == 1 {
				j.aborted++
			}
			again = append(again, j)
			continue
		}
		if v.Outcome == Interrupted && v.Interruption != Cancelled && len(js) == 1 && len(res.other) > 0 && !j.started {
			// Alone and never started: what Nix said is the only clue, and
			// it is this derivation's own invocation.
			for _, l := range res.other {
				j.log.line([]byte(l))
			}
		}
		j.verdict = &v
	}
	r.root(ctx, js)
	switch {
	case len(again) == 0:
	case len(again) == 1:
		r.run(ctx, again)
	default:
		half := (len(again) + 1) / 2
		r.run(ctx, again[:half])
		r.run(ctx, again[half:])
	}
}

// readOutputs returns every output path of the derivation at drvPath,
// sorted by output name, read from the .drv with go-nix.
func readOutputs(drvPath string) ([]string, error) {
	f, err := os.Open(drvPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", drvPath, err)
	}
	defer f.Close()
	d, err := derivation.ReadDerivation(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", drvPath, err)
	}
	names := make([]string, 0, len(d.Outputs))
	for name := range d.Outputs {
		names = append(names, name)
	}
	slices.Sort(names)
	outs := make([]string, 0, len(names))
	for _, name := range names {
		p := d.Outputs[name].Path
		if p == "" {
			// A content-addressed (floating) output has no path before it
			// is built; 2.8 needs an experimental feature for those.
			return nil, fmt.Errorf("%s: output %q has no path (content-addressed derivations are not supported)", drvPath, name)
		}
		outs = append(outs, p)
	}
	return outs, nil
}
