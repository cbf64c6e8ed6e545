package nixbuild

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Job is one derivation of a batch.
type Job struct {
	DrvPath string
	// LogPath and OnLine are Options.LogPath and Options.OnLine, per job.
	LogPath string
	OnLine  func(line []byte)
}

// BatchOptions tune a batch: one nix-build for several derivations.
type BatchOptions struct {
	NixOptions []string
	// Jobs is nix-build's --max-jobs for the batch (default 1).
	Jobs int
	// NoOutputTimeout and TotalTimeout apply to each derivation, through
	// Nix's own max-silent-time and timeout (whole seconds, rounded up).
	NoOutputTimeout time.Duration
	TotalTimeout    time.Duration
	KillGrace       time.Duration
	TailLines       int
}

// BuildBatch builds independent derivations (none an input of another)
// with one `nix-build --keep-going`, so the cost of starting Nix is paid
// once for all of them, and attributes every log line and outcome to its
// derivation from `--log-format internal-json`. Results are in jobs' order.
// The error is non-nil only when nix-build could not start.
func BuildBatch(ctx context.Context, jobs []Job, o BatchOptions) ([]Result, error) {
	if o.KillGrace <= 0 {
		o.KillGrace = 5 * time.Second
	}
	if o.TailLines <= 0 {
		o.TailLines = defaultTailLines
	}
	states := make([]*batchJob, len(jobs))
	byDrv := map[string]*batchJob{}
	for i, j := range jobs {
		lf, err := createLog(j.LogPath)
		if err != nil {
			for _, s := range states[:i] {
				s.log.discard()
			}
			return nil, err
		}
		states[i] = &batchJob{job: j, log: lf, tailN: o.TailLines}
		byDrv[j.DrvPath] = states[i]
	}
	args := []string{"--no-out-link", "--keep-going", "--log-format", "internal-json", "--builders", "",
		"--max-jobs", strconv.Itoa(max(o.Jobs, 1))}
	if o.NoOutputTimeout > 0 {
		args = append(args, "--option", "max-silent-time", strconv.Itoa(int(math.Ceil(o.NoOutputTimeout.Seconds()))))
	}
	if o.TotalTimeout > 0 {
		args = append(args, "--option", "timeout", strconv.Itoa(int(math.Ceil(o.TotalTimeout.Seconds()))))
	}
	for i := 0; i+1 < len(o.NixOptions); i += 2 {
		args = append(args, "--option", o.NixOptions[i], o.NixOptions[i+1])
	}
	for _, j := range jobs {
		args = append(args, j.DrvPath)
	}
	cmd := exec.Command("nix-build", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard // output paths: validity is read per job from the log
	start := time.Now()
	if err := cmd.Start(); err != nil {
		for _, s := range states {
			s.log.discard()
		}
		return nil, fmt.Errorf("start nix-build: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	cancelled := make(chan struct{})
	var cancelAt atomic.Int64
	go func() {
		select {
		case <-ctx.Done():
			cancelAt.Store(time.Now().UnixNano())
			close(cancelled)
			// SIGTERM first: Nix stops its builders itself.
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(o.KillGrace):
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		case <-exited:
		}
	}()
	var other []string // lines and messages no derivation claims
	activity := map[int64]*batchJob{}
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		rest, ok := bytes.CutPrefix(line, []byte("@nix "))
		if !ok {
			other = append(other, string(line))
			continue
		}
		var ev struct {
			Action string            `json:"action"`
			ID     int64             `json:"id"`
			Type   int               `json:"type"`
			Level  int               `json:"level"`
			Msg    string            `json:"msg"`
			Fields []json.RawMessage `json:"fields"`
		}
		if json.Unmarshal(rest, &ev) != nil {
			continue
		}
		switch {
		case ev.Action == "start" && ev.Type == actBuild && len(ev.Fields) > 0:
			var drv string
			_ = json.Unmarshal(ev.Fields[0], &drv)
			if s := byDrv[drv]; s != nil {
				activity[ev.ID] = s
				s.started = true
				s.begin = time.Now()
			}
		case ev.Action == "result" && ev.Type == resBuildLogLine && len(ev.Fields) > 0:
			if s := activity[ev.ID]; s != nil {
				var text string
				_ = json.Unmarshal(ev.Fields[0], &text)
				s.line([]byte(text))
			}
		case ev.Action == "stop":
			if s := activity[ev.ID]; s != nil {
				s.stopped = true
				s.stopAt = time.Now()
				s.took = time.Since(s.begin)
			}
		case ev.Action == "msg" && ev.Level <= 1:
			msg := ansi.ReplaceAllString(ev.Msg, "")
			claimed := false
			if m := failedRE.FindStringSubmatch(msg); m != nil {
				if s := byDrv[m[1]]; s != nil {
					s.exit, _ = strconv.Atoi(m[2])
					s.failed, claimed = true, true
					s.line([]byte(msg))
				}
			}
			if m := timedOutRE.FindStringSubmatch(msg); m != nil {
				if s := byDrv[m[1]]; s != nil {
					s.timedOut, claimed = true, true
					s.detail = timeoutDetail(m[2], o)
					s.line([]byte(msg))
				}
			}
			if !claimed {
				other = append(other, msg)
			}
		}
	}
	werr := cmd.Wait()
	close(exited)
	elapsed := time.Since(start)
	wasCancelled := false
	select {
	case <-cancelled:
		wasCancelled = true
	default:
	}
	results := make([]Result, len(jobs))
	for i, s := range states {
		r := Result{LogPath: s.job.LogPath, Duration: s.took}
		if r.Duration == 0 {
			r.Duration = elapsed
		}
		switch {
		case s.timedOut:
			r.Outcome, r.Interruption, r.ExitCode, r.Detail = Interrupted, Timeout, 101, s.detail
		case s.failed:
			r.Outcome, r.ExitCode = Failed, s.exit
		case werr == nil:
			// Built (or its outputs were already valid: Nix starts no build).
			r.Outcome = Succeeded
		case wasCancelled && (!s.stopped || s.stopAt.UnixNano() >= cancelAt.Load()):
			r.Outcome, r.Interruption, r.ExitCode, r.Detail = Interrupted, Cancelled, -1, "stopped: the build was cancelled"
		case s.stopped:
			// Finished without an error of its own while another failed.
			r.Outcome = Succeeded
		case signaled(werr):
			r.Outcome, r.Interruption, r.ExitCode, r.Detail = Interrupted, ProcessDeath, -1, "nix-build died of a signal"
		default:
			// nix-build failed before this derivation's build could run.
			r.Outcome, r.ExitCode = Failed, exitCode(werr)
			for _, l := range lastN(other, o.TailLines) {
				s.line([]byte(l))
			}
		}
		r.Tail = s.tailString()
		r.LogErr = s.log.Close()
		results[i] = r
	}
	return results, nil
}

// Nix's activity and result types (libutil/logging.hh).
const (
	actBuild        = 105
	resBuildLogLine = 101
)

var (
	ansi       = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	failedRE   = regexp.MustCompile(`builder for '(/nix/store/[^']+\.drv)' failed with exit code (\d+)`)
	timedOutRE = regexp.MustCompile(`building of '(/nix/store/[^'!]+\.drv)(?:![^']*)?'.* timed out after (\d+) seconds( of silence)?`)
)

func timeoutDetail(secs string, o BatchOptions) string {
	if o.NoOutputTimeout > 0 && strings.TrimSpace(secs) == strconv.Itoa(int(math.Ceil(o.NoOutputTimeout.Seconds()))) {
		return fmt.Sprintf("stopped: no output for %s (the no-output timeout)", o.NoOutputTimeout)
	}
	return fmt.Sprintf("stopped: still running after %s (the total timeout)", o.TotalTimeout)
}

func signaled(err error) bool {
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return ws.Signaled()
		}
	}
	return false
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

type batchJob struct {
	job      Job
	log      *logFile
	tail     []string
	tailN    int
	started  bool
	stopped  bool
	failed   bool
	timedOut bool
	exit     int
	detail   string
	begin    time.Time
	stopAt   time.Time
	took     time.Duration
}

func (s *batchJob) line(l []byte) {
	if len(l) > MaxLineBytes {
		l = l[:MaxLineBytes]
	}
	s.log.Write(l)
	s.log.Write([]byte("\n"))
	if s.job.OnLine != nil {
		s.job.OnLine(append([]byte(nil), l...))
	}
	s.tail = append(s.tail, string(l))
	if len(s.tail) > s.tailN {
		s.tail = s.tail[len(s.tail)-s.tailN:]
	}
}

func (s *batchJob) tailString() string { return joinTail(s.tail) }
