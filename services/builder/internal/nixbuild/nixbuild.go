// Package nixbuild runs one nix-build of a .drv and reports what happened:
// succeeded (with the output paths), failed (with nix-build's exit code), or
// interrupted (timeout, cancellation, OOM kill, process death).
//
// It promises that
//   - every output line reaches Options.OnLine in order, and the whole
//     output lands in a zstd-compressed log file that is complete and
//     closed when Build returns, whatever happened;
//   - when Build kills a build (timeout, cancellation), nix-build and the
//     builder processes it started are gone when Build returns: nix-build
//     runs in its own process group, and the groups Nix puts its builders
//     in are tracked and killed too (see procs.go);
//   - Build returns an error only when nothing could be started.
//
// Nix 2.8 writes build logs on stderr and only the output paths on stdout.
// Build asks for --log-format raw-with-logs, which passes the builder's
// lines through unprefixed (bar-with-logs would prefix every line with
// "name> "; plain raw would drop them).
package nixbuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// MaxLineBytes is the longest line handed to OnLine (and kept in Tail) in
// one piece; a longer line arrives as several consecutive pieces. The log
// file always keeps lines whole. 64 KiB stays well below NATS's default
// 1 MiB max payload for live publishing.
const MaxLineBytes = 64 << 10

const (
	defaultTailLines = 30
	defaultKillGrace = 5 * time.Second
	// maxStdout bounds what we keep of nix-build's stdout, which holds only
	// output paths; anything past it is read and dropped.
	maxStdout = 1 << 20
	// readerDrain is how long we wait for EOF on our pipes after nix-build
	// exited; only a process that escaped with a copy of them delays it.
	readerDrain = 2 * time.Second
)

// snapshotEvery is how often the process groups below nix-build are
// re-read (a handful of /proc reads each time).
var snapshotEvery = 250 * time.Millisecond

// testHookSnapshot, when set, sees every refreshed group set (tests only).
var testHookSnapshot func(groups []int)

// Options tune one build. The zero value builds locally with Nix defaults,
// no timeouts and no log file.
type Options struct {
	// Builders is the Nix machines spec passed as --builders. Empty means
	// local only: --builders '' is still passed so no build-remote hook runs.
	Builders string
	// NixOptions are extra name/value pairs, each passed as
	// --option name value, e.g. {"substituters", ""}.
	NixOptions []string
	// MaxJobs is passed as --max-jobs; 0 leaves Nix's default.
	MaxJobs int
	// NoOutputTimeout interrupts the build when nix-build prints no line for
	// this long; 0 means never. Nix forwards builder output line by line, so
	// a builder printing progress without newlines counts as silent.
	NoOutputTimeout time.Duration
	// TotalTimeout interrupts the build after this long; 0 means never.
	TotalTimeout time.Duration
	// KillGrace is how long nix-build gets after SIGTERM to stop its
	// builders before everything gets SIGKILL; 0 means 5s.
	KillGrace time.Duration
	// LogPath is where the full log goes, zstd-compressed, parent
	// directories created, replaced if present. Empty: no log file.
	LogPath string
	// OnLine gets every output line without its newline, stdout and stderr
	// merged in order. It is called from one goroutine at a time, never
	// after Build returns, and may keep the slice. It should be quick: a
	// slow OnLine slows the build (nix-build blocks on a full pipe).
	OnLine func(line []byte)
	// TailLines is how many last lines Result.Tail keeps; 0 means 30.
	TailLines int
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
	// Timeout: our NoOutputTimeout or TotalTimeout, or Nix's own
	// max-silent-time/timeout (nix-build exit code 101).
	Timeout
	// Cancelled: the context was done.
	Cancelled
	// OutOfMemory: a SIGKILL we did not send while the kernel OOM killer
	// was active; a heuristic, see oom.go.
	OutOfMemory
	// ProcessDeath: nix-build died of a signal we did not send and OOM is
	// not a plausible cause.
	ProcessDeath
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
	}
	return "Interruption(" + strconv.Itoa(int(i)) + ")"
}

// Result is what happened to one build.
type Result struct {
	Outcome Outcome
	// ExitCode is nix-build's exit status: 0 on success, 100 for a failed
	// builder, 101 when Nix's own timeout hit, 1 for other Nix errors
	// (e.g. no such .drv, or a SIGTERM/SIGINT from someone else, which
	// nix-build catches: that one is reported as ProcessDeath); -1 when it
	// was killed by us or died of a signal. An OutOfMemory verdict on a
	// builder keeps nix-build's 100.
	ExitCode     int
	Interruption Interruption
	// Tail is the last TailLines output lines, joined by "\n".
	Tail     string
	Duration time.Duration
	// LogPath is Options.LogPath, for convenience.
	LogPath string
	// LogErr is set when the log file could not be fully written or
	// closed; the build's outcome stands regardless.
	LogErr error
	// OutPaths are the store paths nix-build printed, on success only.
	OutPaths []string
	// Detail says in a sentence why an interrupted build stopped.
	Detail string
}

// Build runs `nix-build drvPath --no-out-link` with o and waits for it.
// The error is non-nil only when the build could not start (bad options,
// nix-build not on PATH, log file not creatable); everything that happens
// after start is in the Result.
func Build(ctx context.Context, drvPath string, o Options) (Result, error) {
	args, err := o.args(drvPath)
	if err != nil {
		return Result{}, err
	}
	bin, err := exec.LookPath("nix-build")
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrNoNixBuild, err)
	}
	lf, err := createLog(o.LogPath)
	if err != nil {
		return Result{}, err
	}
	if o.TailLines <= 0 {
		o.TailLines = defaultTailLines
	}
	if o.KillGrace <= 0 {
		o.KillGrace = defaultKillGrace
	}
	r := &run{o: o, log: lf, tail: make([]string, 0, o.TailLines)}
	return r.do(ctx, bin, args, drvPath)
}

func (o Options) args(drvPath string) ([]string, error) {
	if drvPath == "" || strings.HasPrefix(drvPath, "-") {
		return nil, fmt.Errorf("%w: drv path %q", ErrBadOptions, drvPath)
	}
	if len(o.NixOptions)%2 != 0 {
		return nil, fmt.Errorf("%w: NixOptions has %d entries, want name/value pairs", ErrBadOptions, len(o.NixOptions))
	}
	if o.MaxJobs < 0 {
		return nil, fmt.Errorf("%w: MaxJobs %d", ErrBadOptions, o.MaxJobs)
	}
	a := []string{drvPath, "--no-out-link", "--log-format", "raw-with-logs", "--builders", o.Builders}
	if o.MaxJobs > 0 {
		a = append(a, "--max-jobs", strconv.Itoa(o.MaxJobs))
	}
	for i := 0; i < len(o.NixOptions); i += 2 {
		a = append(a, "--option", o.NixOptions[i], o.NixOptions[i+1])
	}
	return a, nil
}

// run is the state of one Build. The stream goroutine owns log, tail and
// builderKilled until it finishes; the main goroutine uses them after.
type run struct {
	o             Options
	detail        string // why supervise killed it, in words
	log           *logFile
	tail          []string // ring of the last TailLines lines
	tailNext      int
	builderKilled bool         // nix-build said a builder died of SIGKILL
	lastInterrupt bool         // the last line is Nix's "interrupted by the user"
	lastOutput    atomic.Int64 // unix nanoseconds of the last line
}

func (r *run) do(ctx context.Context, bin string, args []string, drvPath string) (Result, error) {
	res := Result{LogPath: r.o.LogPath, ExitCode: -1}
	if ctx.Err() != nil {
		// Do not start what is already cancelled; still leave a (empty,
		// valid) log so every Result.LogPath can be opened.
		res.Outcome, res.Interruption = Interrupted, Cancelled
		res.LogErr = r.log.Close()
		return res, nil
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		r.log.discard()
		return Result{}, fmt.Errorf("pipe for nix-build %s: %w", drvPath, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		errR.Close()
		errW.Close()
		r.log.discard()
		return Result{}, fmt.Errorf("pipe for nix-build %s: %w", drvPath, err)
	}
	defer errR.Close()
	defer outR.Close()

	cmd := exec.Command(bin, args...) // not CommandContext: we kill the whole tree ourselves
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	oom := startOOMProbe()
	start := time.Now()
	r.lastOutput.Store(start.UnixNano())
	err = cmd.Start()
	errW.Close()
	outW.Close()
	if err != nil {
		r.log.discard()
		return Result{}, fmt.Errorf("start nix-build %s: %w", drvPath, err)
	}
	pid := cmd.Process.Pid

	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		r.stream(errR)
	}()
	var stdout []byte
	stdoutDone := make(chan struct{})
	go func() {
		defer close(stdoutDone)
		stdout, _ = io.ReadAll(io.LimitReader(outR, maxStdout))
		_, _ = io.Copy(io.Discard, outR)
	}()
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_ = cmd.Wait() // the verdict comes from ProcessState
	}()

	reason, groups := r.supervise(ctx, pid, waited)
	res.Duration = time.Since(start)
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if reason != None || ws.Signaled() {
		// Whatever nix-build left behind goes now: the rest of its own
		// group and the builder groups it started.
		groups.kill(syscall.SIGKILL)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}

	readers := make(chan struct{})
	go func() {
		<-streamDone
		<-stdoutDone
		close(readers)
	}()
	drain := time.NewTimer(readerDrain)
	select {
	case <-readers:
	case <-drain.C:
		// Someone outside nix-build still holds our pipes open; stop
		// reading rather than hang.
		_ = errR.SetReadDeadline(time.Now())
		_ = outR.SetReadDeadline(time.Now())
		<-readers
	}
	drain.Stop()

	// nix-build writes stdout (the output paths) only after the build is
	// done, so appending it after all of stderr keeps the true order
	// without racing two readers.
	var outPaths []string
	for l := range bytes.Lines(stdout) {
		l = bytes.TrimSuffix(l, []byte("\n"))
		r.log.Write(l)
		r.log.Write([]byte("\n"))
		r.line(l)
		if p := string(bytes.TrimSpace(l)); strings.HasPrefix(p, "/") {
			outPaths = append(outPaths, p)
		}
	}
	res.LogErr = r.log.Close()
	res.Tail = r.tailString()

	switch {
	case cmd.ProcessState.Success():
		// Even if we were killing it: it finished first.
		res.Outcome, res.ExitCode, res.OutPaths = Succeeded, 0, outPaths
	case reason != None:
		res.Outcome, res.Interruption, res.Detail = Interrupted, reason, r.detail
	case ws.Signaled():
		res.Outcome, res.Interruption = Interrupted, ProcessDeath
		res.Detail = fmt.Sprintf("nix-build died of %v", ws.Signal())
		if rose, known := oom.rose(); ws.Signal() == syscall.SIGKILL && (rose || !known) {
			res.Interruption = OutOfMemory
			res.Detail = "killed, most likely by the out-of-memory killer"
		}
	default:
		res.ExitCode = ws.ExitStatus()
		res.Outcome = Failed
		// Nix 2.8 exits 0x60|bits for build failures: 0x04 failed (100),
		// 0x01 timed out (101), 0x02 hash mismatch, 0x08 check mismatch.
		if c := res.ExitCode; c&0x60 == 0x60 && c&^0x6f == 0 && c&0x01 != 0 {
			res.Outcome, res.Interruption = Interrupted, Timeout
			res.Detail = "stopped by Nix's own timeout (max-silent-time or timeout)"
		} else if c == 1 && r.lastInterrupt {
			// nix-build turns SIGTERM/SIGINT/SIGHUP from someone else into
			// this message and exit code 1: a death, not a failed build.
			res.Outcome, res.Interruption = Interrupted, ProcessDeath
			res.Detail = "nix-build was interrupted by a signal from outside ekaci"
		} else if r.builderKilled {
			if rose, _ := oom.rose(); rose {
				res.Outcome, res.Interruption = Interrupted, OutOfMemory
				res.Detail = "the builder was killed, most likely by the out-of-memory killer"
			}
		}
	}
	return res, nil
}

// supervise waits for nix-build to exit, killing it and its builders on
// timeout or cancellation. It returns why it killed (or None) and the
// process groups last seen below nix-build.
func (r *run) supervise(ctx context.Context, pid int, waited <-chan struct{}) (Interruption, groupSet) {
	groups := groupSet{}
	reason := None
	var totalC, silenceC, graceC <-chan time.Time
	if r.o.TotalTimeout > 0 {
		t := time.NewTimer(r.o.TotalTimeout)
		defer t.Stop()
		totalC = t.C
	}
	var silence *time.Timer
	if r.o.NoOutputTimeout > 0 {
		silence = time.NewTimer(r.o.NoOutputTimeout)
		defer silence.Stop()
		silenceC = silence.C
	}
	tick := time.NewTicker(snapshotEvery)
	defer tick.Stop()
	snapshot := func() {
		groups.refresh(pid, pid)
		if testHookSnapshot != nil {
			gs := make([]int, 0, len(groups))
			for g := range groups {
				gs = append(gs, g)
			}
			testHookSnapshot(gs)
		}
	}
	done := ctx.Done()
	fromSilence := false
	kill := func(why Interruption) {
		select {
		case <-waited:
			return // it just exited on its own; that verdict stands
		default:
		}
		reason = why
		switch {
		case why == Cancelled:
			r.detail = "stopped: the build was cancelled"
		case fromSilence:
			r.detail = fmt.Sprintf("stopped: no output for %s (the no-output timeout)", r.o.NoOutputTimeout)
		default:
			r.detail = fmt.Sprintf("stopped: still running after %s (the total timeout)", r.o.TotalTimeout)
		}
		done, totalC, silenceC = nil, nil, nil
		snapshot()
		// SIGTERM first: Nix then kills its builders itself and exits
		// with "interrupted by the user".
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		graceC = time.After(r.o.KillGrace)
	}

	for {
		select {
		case <-waited:
			return reason, groups
		case <-done:
			kill(Cancelled)
		case <-totalC:
			kill(Timeout)
		case <-silenceC:
			idle := time.Since(time.Unix(0, r.lastOutput.Load()))
			if idle >= r.o.NoOutputTimeout {
				fromSilence = true
				kill(Timeout)
			} else {
				silence.Reset(r.o.NoOutputTimeout - idle)
			}
		case <-graceC:
			graceC = nil
			snapshot()
			groups.kill(syscall.SIGKILL)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		case <-tick.C:
			snapshot()
		}
	}
}

// stream copies nix-build's stderr to the log and splits it into lines.
// bufio.Reader.ReadSlice, unlike a Scanner, never fails on a long line: it
// hands over full buffers, which we pass on in MaxLineBytes pieces.
func (r *run) stream(rd io.Reader) {
	br := bufio.NewReaderSize(rd, MaxLineBytes)
	var pending []byte
	split := false // pending's line was already partly handed out
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			r.lastOutput.Store(time.Now().UnixNano())
			r.log.Write(chunk)
			complete := chunk[len(chunk)-1] == '\n'
			if complete {
				chunk = chunk[:len(chunk)-1]
			}
			pending = append(pending, chunk...)
			for len(pending) > MaxLineBytes || (!complete && len(pending) == MaxLineBytes) {
				r.line(pending[:MaxLineBytes])
				pending = pending[:copy(pending, pending[MaxLineBytes:])]
				split = true
			}
			if complete {
				if len(pending) > 0 || !split {
					r.line(pending)
				}
				pending, split = pending[:0], false
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil { // io.EOF, or the drain deadline
			if len(pending) > 0 {
				r.line(pending)
			}
			return
		}
	}
}

var (
	builderFailedPrefix = []byte("error: builder for ")
	killedBySIGKILL     = []byte("failed due to signal 9 (Killed)")
	interruptedByUser   = []byte("error: interrupted by the user")
)

// line hands one line to OnLine (as its own copy) and the tail.
func (r *run) line(l []byte) {
	if bytes.HasPrefix(l, builderFailedPrefix) && bytes.Contains(l, killedBySIGKILL) {
		r.builderKilled = true
	}
	r.lastInterrupt = bytes.Equal(l, interruptedByUser)
	if len(r.tail) < cap(r.tail) {
		r.tail = append(r.tail, string(l))
	} else {
		r.tail[r.tailNext] = string(l)
		r.tailNext = (r.tailNext + 1) % len(r.tail)
	}
	if r.o.OnLine != nil {
		r.o.OnLine(bytes.Clone(l))
	}
}

func (r *run) tailString() string {
	return joinTail(append(append([]string(nil), r.tail[r.tailNext:]...), r.tail[:r.tailNext]...))
}

// joinTail joins the tail's lines as valid UTF-8: a build may print any
// bytes (Latin-1, binary, a rune cut where a long line was split), and a
// tail that is not UTF-8 cannot be put in a report or an event (protobuf
// strings must be); the log file keeps the bytes as they were.
func joinTail(lines []string) string {
	return strings.ToValidUTF8(strings.Join(lines, "\n"), "\uFFFD")
}
