package checker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/nixtest"
)

type env struct {
	ctx  context.Context
	log  *eventlog.Log
	cfg  Config
	head string // worktrees
	base string
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// repo makes a repository whose base commit has base's files and head
// commit head's, checked out as two worktrees (as the gitter does).
func repo(t *testing.T, base, head map[string]string) (baseWT, headWT string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, src, "init", "-q", "-b", "main")
	commit := func(files map[string]string, msg string) string {
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		git(t, src, "add", "-A")
		git(t, src, "commit", "-q", "--allow-empty", "-m", msg)
		return git(t, src, "rev-parse", "HEAD")
	}
	b := commit(base, "base")
	h := commit(head, "head")
	baseWT, headWT = filepath.Join(dir, "wt-base"), filepath.Join(dir, "wt-head")
	git(t, src, "worktree", "add", "-q", "--detach", baseWT, b)
	git(t, src, "worktree", "add", "-q", "--detach", headWT, h)
	return baseWT, headWT
}

func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	state := t.TempDir()
	return &env{ctx: ctx, log: log, cfg: Config{
		Events: log, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), Name: "test",
		CheckLogDir: filepath.Join(state, "logs"), StateDir: filepath.Join(state, "checker"), UIDBase: 64100, MaxJobs: 2,
		NixOptions: nixtest.NoSubstituters(), AckWait: 3 * time.Second,
		Limits: Limits{MaxTimeout: time.Minute, MemoryBytes: 256 << 20, Processes: 64, OutputBytes: 1 << 20, FilesBytes: 32 << 20, Files: 2000},
	}}
}

func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("checker: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) queue(t *testing.T, change string, q *eventsv1.CheckQueued) string {
	t.Helper()
	q.ChangeId = change
	if q.HeadWorktree == "" {
		q.HeadWorktree = e.head
	}
	if q.TimeoutSeconds == 0 {
		q.TimeoutSeconds = 30
	}
	id := eventlog.CheckID(change, q.GetName())
	if _, err := e.log.Append(e.ctx, id, &eventsv1.Event{Id: eventlog.CheckQueuedID(id), CorrelationId: change,
		Payload: &eventsv1.Event_CheckQueued{CheckQueued: q}}, eventlog.ExpectLast(0)); err != nil {
		t.Fatal(err)
	}
	return id
}

// facts are the check's facts, by fact name.
func (e *env) facts(t *testing.T, id string) map[string][]*eventsv1.Event {
	t.Helper()
	recs, _, err := e.log.Load(e.ctx, eventlog.Check, id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*eventsv1.Event{}
	for _, r := range recs {
		out[r.Fact] = append(out[r.Fact], r.Event)
	}
	return out
}

func (e *env) ended(t *testing.T, id string) *eventsv1.Event {
	t.Helper()
	var end *eventsv1.Event
	natstest.Eventually(t, 90*time.Second, func() bool {
		f := e.facts(t, id)
		for _, k := range []string{"succeeded", "failed", "interrupted"} {
			if len(f[k]) > 0 {
				end = f[k][0]
			}
		}
		return end != nil
	}, "check "+id+" ends")
	return end
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestChecksEnd: each way a check can end, from the facts the checker
// appends, with the log kept as a build's.
func TestChecksEnd(t *testing.T) {
	e := setup(t)
	e.base, e.head = repo(t,
		map[string]string{"lint.sh": "#!/bin/sh\necho base lint; exit 1\n", "test.sh": "#!/bin/sh\necho base test ok\n"},
		map[string]string{"lint.sh": "#!/bin/sh\necho head lint; exit 1\n", "test.sh": "#!/bin/sh\necho head test broken; exit 3\n", "ok.sh": "#!/bin/sh\necho all good from $(pwd)\n"})
	e.start(t)
	type want struct {
		fact       string
		exit       int32
		kind       eventsv1.CheckInterruptKind
		baseFailed bool
		baseRan    bool
		log        string
	}
	for _, tc := range []struct {
		name string
		q    *eventsv1.CheckQueued
		want want
	}{
		{"passes", &eventsv1.CheckQueued{Name: "ok", Command: "./ok.sh"}, want{fact: "succeeded", log: "all good from /build\n"}},
		{"fails with its exit code", &eventsv1.CheckQueued{Name: "test", Command: "./test.sh"}, want{fact: "failed", exit: 3, log: "head test broken\n"}},
		{"fails where the base passes", &eventsv1.CheckQueued{Name: "test2", Command: ": test2; ./test.sh", BaseHasCheck: true, BaseWorktree: "base"}, want{fact: "failed", exit: 3, baseRan: true}},
		{"fails where the base fails too", &eventsv1.CheckQueued{Name: "lint", Command: "./lint.sh", BaseHasCheck: true, BaseWorktree: "base"}, want{fact: "failed", exit: 1, baseFailed: true, baseRan: true}},
		{"a new check is not compared", &eventsv1.CheckQueued{Name: "lint2", Command: ": lint2; ./lint.sh", BaseWorktree: "base"}, want{fact: "failed", exit: 1}},
		{"stopped at its timeout", &eventsv1.CheckQueued{Name: "slow", Command: "echo start; sleep 600", TimeoutSeconds: 4}, want{fact: "interrupted", exit: -1, kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT, log: "start\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.q.BaseWorktree == "base" {
				tc.q.BaseWorktree = e.base
			}
			id := e.queue(t, "change-"+tc.q.Name, tc.q)
			end := e.ended(t, id)
			var head, base *eventsv1.CheckRun
			var baseFailed bool
			var kind eventsv1.CheckInterruptKind
			switch p := end.GetPayload().(type) {
			case *eventsv1.Event_CheckSucceeded:
				head = p.CheckSucceeded.GetHead()
			case *eventsv1.Event_CheckFailed:
				head, base, baseFailed = p.CheckFailed.GetHead(), p.CheckFailed.GetBase(), p.CheckFailed.GetBaseFailed()
			case *eventsv1.Event_CheckInterrupted:
				head, base, baseFailed, kind = p.CheckInterrupted.GetHead(), p.CheckInterrupted.GetBase(), p.CheckInterrupted.GetBaseFailed(), p.CheckInterrupted.GetKind()
			}
			f := e.facts(t, id)
			fact := ""
			for _, k := range []string{"succeeded", "failed", "interrupted"} {
				if len(f[k]) > 0 {
					fact += k
				}
			}
			if fact != tc.want.fact || head.GetExitCode() != tc.want.exit || kind != tc.want.kind || baseFailed != tc.want.baseFailed || (base != nil) != tc.want.baseRan {
				t.Errorf("check ended %s exit %d %v base %v (failed %v), want %s exit %d %v base ran %v (failed %v)",
					fact, head.GetExitCode(), kind, base, baseFailed, tc.want.fact, tc.want.exit, tc.want.kind, tc.want.baseRan, tc.want.baseFailed)
			}
			if len(f["started"]) != 1 || f["started"][0].GetCheckStarted().GetAttempt() != 1 {
				t.Errorf("check started %d times, want once as attempt 1", len(f["started"]))
			}
			if tc.want.log != "" {
				if got := readLog(t, filepath.Join(e.cfg.CheckLogDir, head.GetLog())); got != tc.want.log {
					t.Errorf("log %s = %q, want %q", head.GetLog(), got, tc.want.log)
				}
			}
			if base != nil && base.GetRevision() != eventsv1.CheckRevision_CHECK_REVISION_BASE {
				t.Errorf("base run is of %v", base.GetRevision())
			}
		})
	}
}

// TestServerMaximumBoundsTimeout: a check's own timeout never exceeds the
// server's maximum.
func TestServerMaximumBoundsTimeout(t *testing.T) {
	e := setup(t)
	e.cfg.Limits.MaxTimeout = 2 * time.Second
	_, e.head = repo(t, nil, map[string]string{"x": ""})
	e.start(t)
	id := e.queue(t, "c", &eventsv1.CheckQueued{Name: "slow", Command: "sleep 600", TimeoutSeconds: 604800})
	end := e.ended(t, id).GetCheckInterrupted()
	if end.GetKind() != eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_TIMEOUT || !strings.Contains(end.GetDetail(), "2s") || end.GetHead().GetDurationMs() > 30_000 {
		t.Errorf("check ended %v", end)
	}
}

// TestUnchangedCheckIsNotRunAgain: the same command on the same tree (and
// packages) in another change takes the earlier result without running;
// a changed command runs.
func TestUnchangedCheckIsNotRunAgain(t *testing.T) {
	e := setup(t)
	_, e.head = repo(t, nil, map[string]string{"t.sh": "#!/bin/sh\necho ran; exit 4\n"})
	e.start(t)
	first := e.ended(t, e.queue(t, "one", &eventsv1.CheckQueued{Name: "t", Command: "./t.sh"})).GetCheckFailed()
	id := e.queue(t, "two", &eventsv1.CheckQueued{Name: "t", Command: "./t.sh"})
	again := e.ended(t, id).GetCheckFailed()
	if !again.GetHead().GetCached() || again.GetHead().GetExitCode() != 4 || again.GetOutputTail() != "ran\n" || len(e.facts(t, id)["started"]) != 0 {
		t.Errorf("unchanged check: %v, want the cached failure with exit 4 and no start", again)
	}
	if first.GetHead().GetCached() || first.GetHead().GetTree() != again.GetHead().GetTree() {
		t.Errorf("first run %v", first)
	}
	changed := e.queue(t, "three", &eventsv1.CheckQueued{Name: "t", Command: "./t.sh "})
	if r := e.ended(t, changed).GetCheckFailed(); r.GetHead().GetCached() || len(e.facts(t, changed)["started"]) != 1 {
		t.Errorf("changed command: %v, want a run", r)
	}
}

// TestStopMidCheckRunsItAgainOnce: a checker stopped mid-check leaves its
// start without an end; the next life runs the check again, as attempt 2,
// and it ends once.
func TestStopMidCheckRunsItAgainOnce(t *testing.T) {
	e := setup(t)
	_, e.head = repo(t, nil, map[string]string{"x": ""})
	stop := e.start(t)
	id := e.queue(t, "c", &eventsv1.CheckQueued{Name: "s", Command: "echo attempt; sleep 3"})
	natstest.Eventually(t, 60*time.Second, func() bool { return len(e.facts(t, id)["started"]) == 1 }, "the check starts")
	stop()
	if f := e.facts(t, id); len(f["succeeded"])+len(f["failed"])+len(f["interrupted"]) != 0 {
		t.Fatalf("a stopped check ended: %v", f)
	}
	e.start(t)
	end := e.ended(t, id).GetCheckSucceeded()
	f := e.facts(t, id)
	if end.GetAttempt() != 2 || len(f["started"]) != 2 || len(f["succeeded"]) != 1 {
		t.Errorf("after a restart: ended as attempt %d, %d starts, %d ends; want attempt 2, 2 starts, 1 end", end.GetAttempt(), len(f["started"]), len(f["succeeded"]))
	}
	if got := readLog(t, filepath.Join(e.cfg.CheckLogDir, end.GetHead().GetLog())); got != "attempt\n" {
		t.Errorf("attempt 2's log = %q", got)
	}
}

// TestPackagesOnPath: a check's packages are its job's built attributes,
// realised by Nix; their bin directories are on PATH. A package that did
// not build interrupts the check.
func TestPackagesOnPath(t *testing.T) {
	nixtest.Require(t)
	e := setup(t)
	_, e.head = repo(t, nil, map[string]string{"x": ""})
	dir := t.TempDir()
	stamp := fmt.Sprint(time.Now().UnixNano())
	nix := filepath.Join(dir, "greet.nix")
	if err := os.WriteFile(nix, []byte(`derivation { name = "greet-`+stamp+`"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/usr/bin/mkdir -p $out/bin && echo '#!/bin/sh' > $out/bin/greet && echo 'echo hello from a package' >> $out/bin/greet && /usr/bin/chmod +x $out/bin/greet" ]; }`), 0o644); err != nil {
		t.Fatal(err)
	}
	drv, err := exec.Command("nix-instantiate", nix).Output()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nix-store", append(nixtest.NoSubstitutersArgs(), "--realise", strings.TrimSpace(string(drv)))...).CombinedOutput(); err != nil {
		t.Fatalf("nix-store --realise: %v\n%s", err, out)
	}
	e.start(t)
	for _, tc := range []struct {
		name, state, fact string
	}{
		{"built", "succeeded", "succeeded"},
		{"not built", "failed", "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			change := "pkgs-" + tc.state
			jobset := eventlog.JobsetID(change, "tools")
			if _, err := e.log.Append(e.ctx, jobset, &eventsv1.Event{Id: "concluded-" + jobset, Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{
				ChangeId: change, Job: "tools", Results: []*eventsv1.AttrResult{{Attr: "greet", DrvPath: strings.TrimSpace(string(drv)), State: tc.state}}}}}); err != nil {
				t.Fatal(err)
			}
			id := e.queue(t, change, &eventsv1.CheckQueued{Name: "g", Command: "greet", Packages: &eventsv1.CheckPackages{Job: "tools", Attrs: []string{"greet"}}, PackagesJobsetId: jobset})
			end := e.ended(t, id)
			f := e.facts(t, id)
			if len(f[tc.fact]) != 1 {
				t.Fatalf("check ended %v, want %s", end, tc.fact)
			}
			if tc.fact == "succeeded" {
				if got := readLog(t, filepath.Join(e.cfg.CheckLogDir, end.GetCheckSucceeded().GetHead().GetLog())); got != "hello from a package\n" {
					t.Errorf("log = %q", got)
				}
			} else if end.GetCheckInterrupted().GetKind() != eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_PACKAGES || !strings.Contains(end.GetCheckInterrupted().GetDetail(), "greet of job tools did not build") {
				t.Errorf("check ended %v, want a packages interruption naming greet", end)
			}
		})
	}
}

// TestNoSandboxInterruptsChecks: a checker on a machine without bubblewrap
// neither runs checks unconfined nor stops: each ends as an infrastructure
// interruption saying why.
func TestNoSandboxInterruptsChecks(t *testing.T) {
	e := setup(t)
	e.cfg.bwrap = "/nonexistent/bwrap"
	_, e.head = repo(t, nil, map[string]string{"x": ""})
	e.start(t)
	end := e.ended(t, e.queue(t, "c", &eventsv1.CheckQueued{Name: "x", Command: "true"})).GetCheckInterrupted()
	if end.GetKind() != eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_INFRASTRUCTURE || !strings.Contains(end.GetDetail(), "/nonexistent/bwrap not found") {
		t.Errorf("check without a sandbox ended %v", end)
	}
}
