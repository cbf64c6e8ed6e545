package checker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/checker/internal/sandbox"
)

// maxTail bounds an output tail in a fact; maxDetail a detail.
const (
	maxTail   = 8 << 10
	maxDetail = 2 << 10
)

func boundDetail(s string) string { return text.Bound(s, maxDetail) }

// check runs one queued check to its end.
func (c *checker) check(ctx context.Context, checkID string, q *eventsv1.CheckQueued) error {
	st, err := c.load(ctx, checkID)
	if err != nil || st.ended {
		return err
	}
	log := c.cfg.Logger.With().Str("check", q.GetName()).Str("change", q.GetChangeId()).Logger()
	pkgs, err := c.packages(ctx, q)
	var missing *packagesMissing
	if errors.As(err, &missing) {
		return c.end(ctx, checkID, st.last, &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{
			ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: st.attempt,
			Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_PACKAGES, Detail: boundDetail(missing.Error()),
		}}, q)
	}
	if err != nil {
		return err
	}
	lim := c.limits(q)
	head, err := c.revision(ctx, q, q.GetHeadWorktree(), pkgs, lim)
	if err != nil {
		return err
	}
	var headRun *eventsv1.CheckRun
	var tail string
	attempt := uint32(0)
	if cached, ok := c.cached(ctx, head.key); ok {
		headRun, tail = cached.run(eventsv1.CheckRevision_CHECK_REVISION_HEAD, head.tree), cached.Tail
		log.Info().Msg("check unchanged since an earlier run: its result stands")
	} else {
		// Fresh: another copy of this message may have started it in
		// the meantime.
		if st, err = c.load(ctx, checkID); err != nil || st.ended {
			return err
		}
		attempt = st.attempt
		started := &eventsv1.Event{Id: eventlog.CheckStartedID(checkID, attempt), CorrelationId: q.GetChangeId(), CausationId: eventlog.CheckQueuedID(checkID),
			Payload: &eventsv1.Event_CheckStarted{CheckStarted: &eventsv1.CheckStarted{ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: attempt, Checker: c.holder}}}
		if _, err := c.cfg.Events.Append(ctx, checkID, started, eventlog.ExpectLast(st.last)); err != nil {
			return fmt.Errorf("start check %s: %w", checkID, err)
		}
		log.Info().Uint32("attempt", attempt).Msg("check started")
		headRun, tail, err = c.run(ctx, checkID, attempt, q, head, pkgs, lim)
		if err != nil {
			return err
		}
	}
	passed := headRun.GetExitCode() == 0 && headRun.GetInterruption() == eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_UNSPECIFIED
	var baseRun *eventsv1.CheckRun
	if !passed && q.GetBaseWorktree() != "" && q.GetBaseHasCheck() {
		base, err := c.revision(ctx, q, q.GetBaseWorktree(), pkgs, lim)
		if err != nil {
			return err
		}
		if cached, ok := c.cached(ctx, base.key); ok {
			baseRun = cached.run(eventsv1.CheckRevision_CHECK_REVISION_BASE, base.tree)
		} else if baseRun, _, err = c.run(ctx, checkID, max(attempt, 1), q, base, pkgs, lim); err != nil {
			return err
		}
	}
	baseFailed := baseRun != nil && (baseRun.GetExitCode() != 0 || baseRun.GetInterruption() != eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_UNSPECIFIED)
	if st, err = c.load(ctx, checkID); err != nil || st.ended {
		return err
	}
	var ending any
	switch {
	case passed:
		ending = &eventsv1.Event_CheckSucceeded{CheckSucceeded: &eventsv1.CheckSucceeded{ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: attempt, Head: headRun}}
	case headRun.GetInterruption() != eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_UNSPECIFIED:
		ending = &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: attempt,
			Kind: headRun.GetInterruption(), Detail: limitDetail(headRun.GetInterruption(), lim), Head: headRun, OutputTail: tail, Base: baseRun, BaseFailed: baseFailed}}
	default:
		ending = &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: attempt,
			Head: headRun, OutputTail: tail, Base: baseRun, BaseFailed: baseFailed}}
	}
	if err := c.end(ctx, checkID, st.last, ending, q); err != nil {
		return err
	}
	log.Info().Bool("passed", passed).Int32("exit_code", headRun.GetExitCode()).Str("limit", headRun.GetInterruption().String()).Bool("base_failed", baseFailed).Msg("check ended")
	return nil
}

func limitDetail(k eventsv1.CheckInterruptKind, lim sandbox.Limits) string {
	switch k {
	case eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT:
		return fmt.Sprintf("stopped at its time limit of %s", lim.Timeout)
	case eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_MEMORY:
		return fmt.Sprintf("killed at its memory limit of %d MiB", lim.MemoryBytes>>20)
	case eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_PROCESSES:
		return fmt.Sprintf("a fork refused at its limit of %d processes", lim.Processes)
	case eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_OUTPUT:
		return fmt.Sprintf("stopped at its output limit of %d MiB", lim.OutputBytes>>20)
	case eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_FILES:
		return fmt.Sprintf("out of room at its limit of %d MiB or %d files written", lim.FilesBytes>>20, lim.Files)
	}
	return ""
}

// limits are the sandbox's bounds for q: the server's, with the check's
// own timeout bounded by the server's maximum.
func (c *checker) limits(q *eventsv1.CheckQueued) sandbox.Limits {
	l := c.cfg.Limits
	timeout := time.Duration(q.GetTimeoutSeconds()) * time.Second
	if timeout <= 0 || timeout > l.MaxTimeout {
		timeout = l.MaxTimeout
	}
	return sandbox.Limits{Timeout: timeout, MemoryBytes: l.MemoryBytes, Processes: l.Processes, OutputBytes: l.OutputBytes, FilesBytes: l.FilesBytes, Files: l.Files}
}

// revision is one checkout to run in: its tree and the run's cache key.
type revision struct {
	worktree, tree, key string
}

func (c *checker) revision(ctx context.Context, q *eventsv1.CheckQueued, worktree string, pkgs *packages, lim sandbox.Limits) (revision, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", worktree, "rev-parse", "--verify", "HEAD^{tree}").Output()
	if err != nil {
		return revision{}, fmt.Errorf("tree of checkout %s: %w", worktree, gitErr(err))
	}
	tree := strings.TrimSpace(string(out))
	h := sha256.New()
	for _, part := range []string{"ekaci-check-v1", q.GetCommand(), tree, pkgs.closureKey(), strconv.FormatBool(q.GetAllowNetwork()),
		fmt.Sprint(lim.Timeout, lim.MemoryBytes, lim.Processes, lim.OutputBytes, lim.FilesBytes, lim.Files), strings.Join(c.cfg.HostPaths, ":")} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return revision{worktree: worktree, tree: tree, key: hex.EncodeToString(h.Sum(nil))}, nil
}

func gitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, text.Bound(strings.TrimSpace(string(ee.Stderr)), 400))
	}
	return err
}

// cachedRun is an earlier run's result, kept in ResultsBucket.
type cachedRun struct {
	ExitCode   int32  `json:"exit_code"`
	DurationMs int64  `json:"duration_ms"`
	Log        string `json:"log"`
	Tail       string `json:"tail"`
}

func (r cachedRun) run(rev eventsv1.CheckRevision, tree string) *eventsv1.CheckRun {
	return &eventsv1.CheckRun{Revision: rev, ExitCode: r.ExitCode, DurationMs: r.DurationMs, Cached: true, Log: r.Log, Tree: tree}
}

func (c *checker) cached(ctx context.Context, key string) (cachedRun, bool) {
	e, err := c.cache.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			c.cfg.Logger.Warn().Err(err).Msg("check results bucket unreadable: running the check")
		}
		return cachedRun{}, false
	}
	var r cachedRun
	if json.Unmarshal(e.Value(), &r) != nil {
		return cachedRun{}, false
	}
	return r, true
}

// run runs the command once in rev's tree and keeps its result for the
// next identical run, unless a limit stopped it.
func (c *checker) run(ctx context.Context, checkID string, attempt uint32, q *eventsv1.CheckQueued, rev revision, pkgs *packages, lim sandbox.Limits) (*eventsv1.CheckRun, string, error) {
	which := eventsv1.CheckRevision_CHECK_REVISION_HEAD
	name := fmt.Sprintf("%d.log.zst", attempt)
	if rev.worktree != q.GetHeadWorktree() {
		which = eventsv1.CheckRevision_CHECK_REVISION_BASE
		name = fmt.Sprintf("%d-base.log.zst", attempt)
	}
	rel := filepath.Join(checkID, name)
	out, err := newOutput(filepath.Join(c.cfg.CheckLogDir, rel), c.cfg.Conn, eventlog.LogSubject(checkID, attempt), maxTail)
	if err != nil {
		return nil, "", err
	}
	res, err := c.runner.Run(ctx, sandbox.Spec{
		Name: checkID, Command: q.GetCommand(), Path: pkgs.binDirs(), Network: q.GetAllowNetwork(), Limits: lim, Output: out,
		Populate: func(ctx context.Context, dir string, uid int) error { return archive(ctx, rev.worktree, dir, uid) },
	})
	if cerr := out.Close(); err == nil && cerr != nil {
		c.cfg.Logger.Warn().Err(cerr).Str("log", rel).Msg("check log incomplete")
	}
	if err != nil {
		return nil, "", fmt.Errorf("run check %s: %w", checkID, err)
	}
	run := &eventsv1.CheckRun{Revision: which, ExitCode: int32(res.ExitCode), Interruption: interruption(res.Limit),
		DurationMs: res.Duration.Milliseconds(), Log: rel, Tree: rev.tree}
	tail := out.Tail()
	if run.Interruption == eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_UNSPECIFIED {
		raw, _ := json.Marshal(cachedRun{ExitCode: run.ExitCode, DurationMs: run.DurationMs, Log: rel, Tail: text.Tail(tail, 32<<10)})
		if _, err := c.cache.Put(ctx, rev.key, raw); err != nil {
			c.cfg.Logger.Warn().Err(err).Msg("check result not kept: the next identical run runs again")
		}
	}
	return run, tail, nil
}

func interruption(l sandbox.Limit) eventsv1.CheckInterruptKind {
	switch l {
	case sandbox.LimitTimeout:
		return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT
	case sandbox.LimitMemory:
		return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_MEMORY
	case sandbox.LimitProcesses:
		return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_PROCESSES
	case sandbox.LimitOutput:
		return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_OUTPUT
	case sandbox.LimitFiles:
		return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_FILES
	}
	return eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_UNSPECIFIED
}

// archive writes the tree of worktree's commit into dir, running tar as
// the check's uid (so what it writes counts against the check's files
// limit): the committed tree only, symlinks as symlinks, never the
// mirror's objects.
func archive(ctx context.Context, worktree, dir string, uid int) error {
	git := exec.CommandContext(ctx, "git", "-C", worktree, "archive", "--format=tar", "HEAD")
	tar := exec.CommandContext(ctx, "tar", "-x", "--no-same-owner", "--no-same-permissions", "-C", dir)
	tar.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}, Pdeathsig: syscall.SIGKILL}
	pipe, err := git.StdoutPipe()
	if err != nil {
		return err
	}
	tar.Stdin = pipe
	var gitErrOut, tarErrOut strings.Builder
	git.Stderr, tar.Stderr = &gitErrOut, &tarErrOut
	if err := git.Start(); err != nil {
		return fmt.Errorf("git archive of %s: %w", worktree, err)
	}
	if err := tar.Run(); err != nil {
		_ = git.Process.Kill()
		_ = git.Wait()
		return fmt.Errorf("unpack the tree of %s: %w: %s", worktree, err, text.Bound(tarErrOut.String(), 400))
	}
	if err := git.Wait(); err != nil {
		return fmt.Errorf("git archive of %s: %w: %s", worktree, err, text.Bound(gitErrOut.String(), 400))
	}
	return nil
}
