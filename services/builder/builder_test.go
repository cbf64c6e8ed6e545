package builder

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/nixtest"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/builder/internal/nixbuild"
)

var noSubst = []string{"substituters", ""}

func needNix(t *testing.T) {
	t.Helper()
	nixtest.Require(t) // fails, never skips: `make test` installs Nix
}

// instantiate writes a /bin/sh derivation running script, new to the store.
func instantiate(t *testing.T, name, script string) string {
	t.Helper()
	needNix(t)
	expr := fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; salt = "%d"; args = [ "-c" %q ]; }`,
		name, time.Now().UnixNano(), script)
	f := filepath.Join(t.TempDir(), "drv.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", f).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// appendStarted records another holder's start of attempt 1 after last.
func (h *harness) appendStarted(id string, last uint64, holder string, lease time.Duration) uint64 {
	h.t.Helper()
	ev := &eventsv1.Event{Id: "started-elsewhere-" + id, Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{
		Attempt: 1, Builder: "elsewhere", Holder: holder, LeaseSeconds: uint32(lease / time.Second),
	}}}
	a, err := h.log.Append(h.ctx, id, ev, eventlog.ExpectLast(last))
	if err != nil {
		h.t.Fatal(err)
	}
	return a.Seq
}

func (h *harness) heartbeat(holder string) {
	h.t.Helper()
	kv, err := h.js.CreateOrUpdateKeyValue(h.ctx, jetstreamKV())
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := kv.Put(h.ctx, holder, []byte(`{}`)); err != nil {
		h.t.Fatal(err)
	}
}

// TestCopyOfAHeldAttempt: another copy of the request for an attempt that
// is Building is kept, never acked, while its holder is alive (it may be
// the holder's own message), and settled by what happens next: acked with
// nothing reported once the holder's attempt ends, or the death reported
// (with a message id of its own) once the holder is gone; put back while
// the holder is late, and reported dead only once its lease has passed
// (cause 7: any second copy was reported as the running build's death,
// using up its retry). "holder alive, then gone for good" is the lost
// redelivery: the copy was acked while its holder lived, and when that
// holder then died on another machine nothing reported the attempt.
func TestCopyOfAHeldAttempt(t *testing.T) {
	tests := []struct {
		name      string
		beat      bool          // the holder has a heartbeat
		beatAge   time.Duration // how old it is when the copy arrives
		lease     time.Duration
		then      string // while the copy is kept: "ends" (the attempt's outcome is recorded) or "dies" (the holder's key goes)
		wantDeath bool
		notBefore time.Duration // no death report earlier than this after the heartbeat
	}{
		{name: "holder alive, then its attempt ends", beat: true, lease: 30 * time.Second, then: "ends"},
		{name: "holder alive, then gone for good", beat: true, lease: 30 * time.Second, then: "dies", wantDeath: true},
		{name: "holder gone", beat: false, lease: 30 * time.Second, wantDeath: true},
		{name: "holder late, then gone", beat: true, beatAge: 2500 * time.Millisecond, lease: 4 * time.Second,
			wantDeath: true, notBefore: 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			drv := "/nix/store/" + strings.Repeat("a", 32) + "-held.drv"
			id, last := h.ready(drv)
			holder := "elsewhere-" + notKeyChars.ReplaceAllString(tt.name, "-")
			started := h.appendStarted(id, last, holder, tt.lease)
			var beatAt time.Time
			if tt.beat {
				h.heartbeat(holder)
				beatAt = time.Now()
				time.Sleep(tt.beatAge)
			}
			// The copy still carries the buildable sequence, as a replay of
			// the router's request past the duplicate window does.
			h.request(id, drv, last, "copy-"+id)
			h.run(Config{Noop: &Noop{}})
			var diedAt time.Time
			if tt.then != "" {
				// Kept: delivered (the consumer took it) and still pending,
				// with nothing reported, over several of the builder's looks.
				natstest.Eventually(t, 20*time.Second, func() bool { return h.delivered() > 0 }, "the copy is delivered")
				time.Sleep(3 * watchInterval(tt.lease))
				if n := h.pending(); n != 1 {
					t.Fatalf("%d requests pending while the holder lives, want the copy kept (1)", n)
				}
				if got := h.got(); len(got) != 0 {
					t.Fatalf("reports %v, want none for a copy of an attempt a live builder holds", got[0].rep)
				}
				switch tt.then {
				case "ends":
					ev := &eventsv1.Event{Id: "succeeded-elsewhere-" + id, Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: 1}}}
					if _, err := h.log.Append(h.ctx, id, ev, eventlog.ExpectLast(started)); err != nil {
						t.Fatal(err)
					}
					natstest.Eventually(t, 30*time.Second, func() bool { return h.pending() == 0 }, "the copy is acked once the attempt ended")
					time.Sleep(time.Second)
					if got := h.got(); len(got) != 0 {
						t.Fatalf("reports %v, want none for an attempt its holder concluded", got[0].rep)
					}
					return
				case "dies":
					kv, err := h.js.KeyValue(h.ctx, HoldersBucket)
					if err != nil {
						t.Fatal(err)
					}
					diedAt = time.Now()
					if err := kv.Delete(h.ctx, holder); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !tt.wantDeath {
				t.Fatalf("row %q expects nothing", tt.name)
			}
			got := h.waitReports(1, 30*time.Second)
			r := got[0]
			if r.rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED ||
				r.rep.GetInterruption() != eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH || r.rep.GetStartedSeq() != started {
				t.Fatalf("report %v, want the death of attempt 1", r.rep)
			}
			if want := "death-" + id + "-1-" + holder; r.msgID != want {
				t.Fatalf("msg id %q, want %q (a death report must not share the real outcome's id)", r.msgID, want)
			}
			if r.at.Before(diedAt) {
				t.Fatalf("death reported before the holder died")
			}
			if tt.notBefore > 0 && r.at.Sub(beatAt) < tt.notBefore {
				t.Fatalf("death reported %v after the last heartbeat, before its lease of %v", r.at.Sub(beatAt), tt.notBefore)
			}
			natstest.Eventually(t, 20*time.Second, func() bool { return h.pending() == 0 }, "the copy is acked once the death is reported")
		})
	}
}

// delivered is how many messages the builder consumer has handed out.
func (h *harness) delivered() uint64 {
	h.t.Helper()
	c, err := h.js.Consumer(h.ctx, eventlog.WorkStream, eventlog.BuilderDurable(currentSystem(), workv1.BuildClass_BUILD_CLASS_LOCAL))
	if err != nil {
		return 0
	}
	info, err := c.Info(h.ctx)
	if err != nil {
		return 0
	}
	return info.Delivered.Consumer
}

// pending is what the builder consumer still holds or has not delivered.
func (h *harness) pending() int {
	h.t.Helper()
	s, err := h.js.Stream(h.ctx, eventlog.WorkStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.ctx, jetstreamSubjects())
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for subj, c := range info.State.Subjects {
		if strings.HasPrefix(subj, eventlog.WorkRoot+".build.") {
			n += int(c)
		}
	}
	return n
}

// TestQueuedRequestsAreNotStarted: requests that wait in a batch queue
// are not recorded as started; a builder stopped meanwhile leaves them
// Buildable, and the next one builds them without any death being
// reported (cause 7: build_started was appended when the request was
// taken, and after a restart each queued request was reported dead).
func TestQueuedRequestsAreNotStarted(t *testing.T) {
	h := newHarness(t)
	slow := instantiate(t, "slow", "echo started; sleep 6; echo ok > $out")
	slowID, slowLast := h.ready(slow)
	var queued []string
	var queuedIDs []string
	for i := range 3 {
		d := instantiate(t, fmt.Sprint("queued", i), "echo ok > $out")
		queued = append(queued, d)
	}
	stop := h.run(Config{NixOptions: noSubst, Pools: []machines.Pool{{System: currentSystem(), Class: workv1.BuildClass_BUILD_CLASS_LOCAL, MaxJobs: 1}},
		ShutdownGrace: time.Second})
	h.request(slowID, slow, slowLast, "req-"+slowID)
	natstest.Eventually(t, 30*time.Second, func() bool { cur, _ := h.state(slowID); return cur.State == buildstate.Building }, "the slow build starts")
	time.Sleep(500 * time.Millisecond) // its lane is busy in nix-store now
	for _, d := range queued {
		id, last := h.ready(d)
		queuedIDs = append(queuedIDs, id)
		h.request(id, d, last, "req-"+id)
	}
	time.Sleep(time.Second) // taken by the builder, waiting for the lane
	stop()
	for _, id := range queuedIDs {
		if cur, _ := h.state(id); cur.State != buildstate.Buildable {
			t.Fatalf("a queued request is %v after the builder stopped, want Buildable (never started)", cur.State)
		}
	}
	h.run(Config{NixOptions: noSubst, Name: "next-life"})
	got := h.waitReports(4, 60*time.Second)
	for _, r := range got {
		id := r.rep.GetDrvId()
		switch {
		case id == slowID:
			if r.rep.GetInterruption() != eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH {
				t.Errorf("the slow build stopped by the shutdown: %v", r.rep)
			}
		case r.rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED || strings.HasPrefix(r.msgID, "death-"):
			t.Errorf("a queued request: %v (msg id %s), want built by the next life", r.rep, r.msgID)
		}
	}
}

// TestGiveUpRecordsInfrastructure: a request the builder gives up on (here
// its log file cannot be created, on every delivery) ends as an
// infrastructure interruption of a started attempt, so the derivation
// never stays Building or Buildable with nothing to move it (review
// finding 8: the request was terminated with no fact at all).
func TestGiveUpRecordsInfrastructure(t *testing.T) {
	old := workerMaxDeliver
	workerMaxDeliver = 2
	t.Cleanup(func() { workerMaxDeliver = old })
	h := newHarness(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	drv := instantiate(t, "giveup", "echo ok > $out")
	id, last := h.ready(drv)
	h.request(id, drv, last, "req-"+id)
	h.run(Config{NixOptions: noSubst, NoBatch: true, BuildLogDir: filepath.Join(file, "logs")})
	got := h.waitReports(1, 60*time.Second)
	r := got[0]
	if r.rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED ||
		r.rep.GetInterruption() != eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE ||
		!strings.Contains(r.rep.GetLogTail(), "not a directory") || r.msgID != "gaveup-"+id+"-1" {
		t.Fatalf("report %v (msg id %s), want an infrastructure interruption naming the error", r.rep, r.msgID)
	}
	if cur, _ := h.state(id); cur.State != buildstate.Building || r.rep.GetStartedSeq() == 0 {
		t.Fatalf("state %v, started seq %d: the report must find its attempt started", cur.State, r.rep.GetStartedSeq())
	}
}

// TestReportsStayBounded: a build that prints far more than the log cap,
// in long lines, then fails: the log file stops at the cap with a notice
// and the build goes on; the report's tail is bounded and fits the mesh's
// 1 MiB max payload many times over (cause 9: a tail of ~1.9 MB).
func TestReportsStayBounded(t *testing.T) {
	h := newHarness(t)
	drv := instantiate(t, "noisy", "i=0; while [ $i -lt 40 ]; do head -c 200000 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done; echo the-end; exit 1")
	id, last := h.ready(drv)
	h.request(id, drv, last, "req-"+id)
	logDir := t.TempDir()
	h.run(Config{NixOptions: noSubst, BuildLogDir: logDir, AttemptLogMaxBytes: 1 << 20})
	r := h.waitReports(1, 60*time.Second)[0].rep
	if r.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_FAILED || !strings.HasSuffix(r.GetLogTail(), "failed with exit code 1") {
		t.Fatalf("report %v", r)
	}
	if size := eventlog.JSONSize(r); size > maxReportTail+4096 {
		t.Fatalf("report of %d bytes", size)
	}
	rc, err := nixbuild.OpenLog(r.GetLogPath())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	log, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) > 1<<20+1024 || !strings.Contains(string(log), "reached its cap of 1048576 bytes") || strings.Contains(string(log), "the-end") {
		t.Fatalf("log of %d bytes, want the cap and its notice, nothing after", len(log))
	}
}

func jetstreamKV() jetstream.KeyValueConfig { return holdersConfig(1) }

func jetstreamSubjects() jetstream.StreamInfoOpt { return jetstream.WithSubjectFilter(">") }

func currentSystem() string { return service.CurrentSystem() }
