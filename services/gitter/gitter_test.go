package gitter

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.invalid"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// repo makes a repository with one commit and returns it and the commit.
func repo(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "one")
	return dir, git(t, dir, "rev-parse", "HEAD")
}

type env struct {
	ctx context.Context
	js  jetstream.JetStream
	log *eventlog.Log
	cfg Config
}

// setup gives a test an event log whose duplicate window is a second, so
// a test can replay a fact after it.
func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	js := eventlogtest.JetStreamWith(t, ctx, eventlog.StreamOptions{DuplicateWindow: time.Second})
	log := eventlog.New(js)
	return &env{ctx: ctx, js: js, log: log, cfg: Config{
		Events: log, Logger: zerolog.Nop(), GitDir: t.TempDir(), Backoff: 100 * time.Millisecond, MaxDeliver: 3,
	}}
}

// start runs the gitter until the returned stop is called.
func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gitter: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) request(t *testing.T, req *eventsv1.ChangeRequested) string {
	t.Helper()
	id := eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit())
	ev := &eventsv1.Event{Id: "requested-" + id, Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: req}}
	if _, err := e.log.Append(e.ctx, id, ev, eventlog.ExpectLast(0)); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) facts(t *testing.T, id, fact string) []*eventsv1.Event {
	t.Helper()
	recs, _, err := e.log.Load(e.ctx, eventlog.Change, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []*eventsv1.Event
	for _, r := range recs {
		if r.Fact == fact {
			out = append(out, r.Event)
		}
	}
	return out
}

// wait returns the change's first fact of one of kinds, waiting for it.
func (e *env) wait(t *testing.T, id string, kinds ...string) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	natstest.Eventually(t, 30*time.Second, func() bool {
		for _, k := range kinds {
			if evs := e.facts(t, id, k); len(evs) > 0 {
				found = evs[0]
				return true
			}
		}
		return false
	}, "change "+id+" gets "+strings.Join(kinds, " or "))
	return found
}

// settled waits until the gitter's consumer has nothing pending or
// unacknowledged: every delivery is handled.
func (e *env) settled(t *testing.T) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() bool {
		c, err := e.js.Consumer(e.ctx, eventlog.EventsStream, "gitter")
		if err != nil {
			return false
		}
		info, err := c.Info(e.ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the gitter handled every delivery")
}

// redeliver makes the next gitter see every message again, as a consumer
// recreated after a crash (or a lost ack) would.
func (e *env) redeliver(t *testing.T) {
	t.Helper()
	if err := e.js.DeleteConsumer(e.ctx, eventlog.EventsStream, "gitter"); err != nil {
		t.Fatal(err)
	}
}

func (e *env) conclude(t *testing.T, id string) {
	t.Helper()
	_, last, err := e.log.Load(e.ctx, eventlog.Change, id)
	if err != nil {
		t.Fatal(err)
	}
	ev := &eventsv1.Event{Id: "concluded-" + id, Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{
		Conclusion: eventsv1.Conclusion_CONCLUSION_SUCCESS}}}
	if _, err := e.log.Append(e.ctx, id, ev, eventlog.ExpectLast(last)); err != nil {
		t.Fatal(err)
	}
}

// TestRequestReplayedAfterTheWindow is finding 1 of the core review for
// the gitter: the same change.requested handled again after the duplicate
// window used to append a second checked_out (and, after the change's
// cleanup, recreate its worktree for good).
func TestRequestReplayedAfterTheWindow(t *testing.T) {
	e := setup(t)
	src, head := repo(t)
	stop := e.start(t)
	id := e.request(t, &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: head})
	co := e.wait(t, id, "checked_out", "checkout_failed").GetChangeCheckedOut()
	if co == nil {
		t.Fatalf("checkout failed: %v", e.facts(t, id, "checkout_failed"))
	}
	e.settled(t)
	stop()

	time.Sleep(1500 * time.Millisecond) // past the 1 s duplicate window
	e.redeliver(t)
	stop = e.start(t)
	e.settled(t)
	stop()
	if n := len(e.facts(t, id, "checked_out")); n != 1 {
		t.Fatalf("change has %d checked_out facts after a replay past the window, want 1", n)
	}

	// Concluded and cleaned up, then everything replayed again: the
	// request finds its change concluded and makes no worktree.
	e.conclude(t, id)
	stop = e.start(t)
	natstest.Eventually(t, 30*time.Second, func() bool {
		_, err := os.Stat(co.GetHeadWorktree())
		return errors.Is(err, os.ErrNotExist)
	}, "the concluded change's worktree is removed")
	e.settled(t)
	stop()
	time.Sleep(1500 * time.Millisecond)
	e.redeliver(t)
	stop = e.start(t)
	e.settled(t)
	stop()
	if n := len(e.facts(t, id, "checked_out")); n != 1 {
		t.Fatalf("change has %d checked_out facts after its conclusion was replayed, want 1", n)
	}
	if _, err := os.Stat(co.GetHeadWorktree()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a replayed request recreated the concluded change's worktree %s", co.GetHeadWorktree())
	}
}

func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String() + "/repo.git"
}

func TestCheckoutOutcomes(t *testing.T) {
	e := setup(t)
	src, head := repo(t)
	missing := filepath.Join(t.TempDir(), "nope")
	e.start(t)
	tests := []struct {
		name string
		req  *eventsv1.ChangeRequested
		fact string
		want []string // in the error, for a failure
	}{
		{"checked out", &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: head}, "checked_out", nil},
		{"missing file URL fails at once", &eventsv1.ChangeRequested{RepoUrl: "file://" + missing, HeadCommit: head},
			"checkout_failed", []string{"unknown repository", "does not appear to be a git repository"}},
		{"unknown commit", &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: strings.Repeat("0", 40)},
			"checkout_failed", []string{"is not a commit of"}},
		{"unknown base commit", &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: head, BaseCommit: strings.Repeat("a", 64)},
			"checkout_failed", []string{"base " + strings.Repeat("a", 64)}},
		{"head that climbs out", &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: "../../../../victim"},
			"checkout_failed", []string{"(gitter): head commit", "is not a full commit id"}},
		{"branch name", &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: "main"},
			"checkout_failed", []string{"is not a full commit id"}},
		{"transient error retried, then given up saying so", &eventsv1.ChangeRequested{RepoUrl: closedURL(t), HeadCommit: head},
			"checkout_failed", []string{"gave up after 3 tries on a transient error", "request the change again"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := e.request(t, tt.req)
			ev := e.wait(t, id, "checked_out", "checkout_failed")
			if got := e.facts(t, id, tt.fact); len(got) != 1 {
				t.Fatalf("want one %s, got %v", tt.fact, ev)
			}
			msg := ev.GetChangeCheckoutFailed().GetError()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if tt.fact == "checkout_failed" && len(tt.want) > 0 && !strings.Contains(tt.want[0], "gave up") && strings.Contains(msg, "gave up") {
				t.Errorf("a permanent failure was retried: %q", msg)
			}
		})
	}
}

// failingGit puts a git on PATH that fails its first clone the way a DNS
// blip does, then runs the real git.
func failingGit(t *testing.T) {
	t.Helper()
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "failed-once")
	script := `#!/bin/sh
for a in "$@"; do
  if [ "$a" = clone ] && [ ! -e "` + marker + `" ]; then
    : > "` + marker + `"
    echo "fatal: unable to access 'https://example.invalid/': Could not resolve host: example.invalid" >&2
    exit 128
  fi
done
exec "` + real + `" "$@"
`
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// TestTransientCloneIsRetried: a clone that fails once on a name
// resolution error used to be recorded as an unknown repository for good.
func TestTransientCloneIsRetried(t *testing.T) {
	e := setup(t)
	src, head := repo(t)
	failingGit(t)
	e.start(t)
	id := e.request(t, &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: head})
	if ev := e.wait(t, id, "checked_out", "checkout_failed"); ev.GetChangeCheckedOut() == nil {
		t.Fatalf("a transient clone error ended the change: %v", ev)
	}
}

func TestCleanupRemovesTheChangesGCRoots(t *testing.T) {
	e := setup(t)
	src, head := repo(t)
	roots := t.TempDir()
	e.cfg.GCRootsDir = roots
	e.start(t)
	id := e.request(t, &eventsv1.ChangeRequested{RepoUrl: src, HeadCommit: head})
	other := "other-change"
	for _, d := range []string{filepath.Join(roots, id, "jobset"), filepath.Join(roots, other)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/nix/store/00000000000000000000000000000000-x.drv", filepath.Join(d, "x.drv")); err != nil {
			t.Fatal(err)
		}
	}
	co := e.wait(t, id, "checked_out").GetChangeCheckedOut()
	e.conclude(t, id)
	natstest.Eventually(t, 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(roots, id))
		return errors.Is(err, os.ErrNotExist)
	}, "the concluded change's GC roots are removed")
	if _, err := os.Stat(co.GetHeadWorktree()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("worktree %s survived the conclusion", co.GetHeadWorktree())
	}
	if _, err := os.Lstat(filepath.Join(roots, other, "x.drv")); err != nil {
		t.Errorf("another change's roots were removed: %v", err)
	}
}
