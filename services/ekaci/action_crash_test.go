package ekaci_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/services/ekaci"
)

// server is `ekaci serve` as a child process, killed and started again
// on the same data dir and port.
type server struct {
	t         *testing.T
	bin, data string
	port      int
	cmd       *exec.Cmd
	exited    chan error
	stderr    bytes.Buffer
	nc        *nats.Conn
	log       *eventlog.Log
}

func (s *server) start(ctx context.Context) {
	s.t.Helper()
	s.stderr.Reset()
	s.cmd = exec.CommandContext(ctx, s.bin, "serve", "--data-dir", s.data, "--nats-port", strconv.Itoa(s.port),
		"--max-jobs", "2", "--no-output-timeout", "60s", "--nix-option", "substituters=", "--log-format", "json", "--log-level", "warn")
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	natstest.Eventually(s.t, time.Minute, func() bool {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return false
		}
		if _, err := js.Stream(ctx, eventlog.EventsStream); err != nil {
			nc.Close()
			return false
		}
		s.nc, s.log = nc, eventlog.New(js)
		return true
	}, "ekaci serve answers on its NATS port")
}

func (s *server) kill() {
	s.t.Helper()
	s.nc.Close()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.ProcessState != nil {
		return
	}
	s.nc.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// facts lists an aggregate's facts of one kind.
func facts(t *testing.T, ctx context.Context, log *eventlog.Log, agg, id, fact string) []*eventsv1.Event {
	t.Helper()
	recs, _, err := log.Load(ctx, agg, id)
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

// drvState folds a derivation's own history.
func drvState(t *testing.T, ctx context.Context, log *eventlog.Log, id string) buildstate.Drv {
	t.Helper()
	recs, _, err := log.Load(ctx, eventlog.Drv, id)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*eventsv1.Event
	for _, r := range recs {
		evs = append(evs, r.Event)
	}
	d, err := buildstate.Fold(evs)
	if err != nil {
		t.Fatalf("derivation %s: %v", id, err)
	}
	return d
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestActionsSurviveKills restarts a concluded jobset and cancels a
// change while SIGKILLing `ekaci serve` at random moments after each
// action, starting it again on the same data dir, and checks the final
// states: the restart builds the failure once more and concludes the
// jobset and its change once more (each once, under its round's id); the
// cancel concludes the change and its jobset cancelled once, the
// derivation only it needed is interrupted (cancelled) and never started,
// what the other change built stays built, and nothing is left unsettled;
// the admin read model, killed with everything else, answers as one
// folded from the log afresh.
func TestActionsSurviveKills(t *testing.T) {
	requireNix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	seed := uint64(chaosEnv(t, "EKACI_CHAOS_SEED", 1))
	r := rand.New(rand.NewPCG(seed, 0xac7))
	bin := filepath.Join(t.TempDir(), "ekaci")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ekaci/ekaci/services/ekaci/cmd/ekaci").CombinedOutput(); err != nil {
		t.Fatalf("build ekaci: %v\n%s", err, out)
	}
	common := `let mk = name: inputs: script: derivation { inherit name inputs; system = builtins.currentSystem; salt = "@SALT@";
  PATH = "/usr/bin:/bin"; builder = "/bin/sh"; args = [ "-c" script ]; };
`
	repo := makeRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": common + `in rec {
  good = mk "good" [ ] "echo ok > $out";
  bad = mk "bad" [ ] "echo nope; exit 1";
  usesBad = mk "uses-bad" [ bad ] "echo > $out";
}`,
	})
	first := git(t, repo, "rev-parse", "HEAD")
	// slow1 waits for a marker (outside the store, readable by Nix's
	// build users) that the test makes only once the cancel has landed:
	// what depends on it cannot start before, whatever the load.
	markers, err := os.MkdirTemp("", "ekaci-cancel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(markers, "go")
	// The same salt as the first commit's: good is the same derivation in
	// both changes.
	old, err := os.ReadFile(filepath.Join(repo, "default.nix"))
	if err != nil {
		t.Fatal(err)
	}
	salt := regexp.MustCompile(`salt = "([^"]+)"`).FindSubmatch(old)[1]
	next := strings.ReplaceAll(common+`in rec {
  good = mk "good" [ ] "echo ok > $out";
  slow1 = mk "slow-1" [ good ] "while [ ! -e @MARKER@ ]; do sleep 0.1; done; echo > $out";
  slow2 = mk "slow-2" [ slow1 ] "sleep 3; echo > $out";
  slow3 = mk "slow-3" [ slow2 ] "sleep 3; echo > $out";
  top = mk "top" [ slow3 ] "echo > $out";
}`, "@SALT@", string(salt))
	next = strings.ReplaceAll(next, "@MARKER@", marker)
	if err := os.WriteFile(filepath.Join(repo, "default.nix"), []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "commit", "-q", "-am", "second")
	second := git(t, repo, "rev-parse", "HEAD")

	s := &server{t: t, bin: bin, data: filepath.Join(t.TempDir(), "data"), port: freePort(t)}
	s.start(ctx)
	t.Cleanup(s.stop)
	who := &eventsv1.Actor{Who: "crash-test", Source: action.SourceAdmin}
	// killAfter kills the server after a random delay (or sooner, if it
	// ends), then starts it again.
	killAfter := func(max time.Duration) {
		d := time.Duration(r.Int64N(int64(max)))
		select {
		case <-time.After(d):
		case err := <-s.exited:
			t.Fatalf("ekaci serve exited by itself: %v\n%s", err, s.stderr.String())
		}
		s.kill()
		t.Logf("killed ekaci serve %v after the action", d)
		s.start(ctx)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		natstest.Eventually(t, 4*time.Minute, cond, what)
	}

	// A change with a failure, concluded.
	cr1, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo, Rev: first})
	if err != nil {
		t.Fatal(err)
	}
	change1, err := ekaci.Submit(ctx, s.log, cr1)
	if err != nil {
		t.Fatal(err)
	}
	jobset1 := eventlog.JobsetID(change1, "main")
	waitFor("change 1 concludes", func() bool { return len(facts(t, ctx, s.log, eventlog.Change, change1, "concluded")) == 1 })
	ids := map[string]string{}
	for _, a := range facts(t, ctx, s.log, eventlog.Jobset, jobset1, "evaluated")[0].GetJobsetEvaluated().GetAttrs() {
		ids[a.GetAttr()] = a.GetDrvId()
	}

	// Restart it, killing the server twice along the way.
	if _, err := action.Restart(ctx, s.log, jobset1, who); err != nil {
		t.Fatal(err)
	}
	killAfter(1500 * time.Millisecond)
	killAfter(3 * time.Second)
	waitFor("jobset 1 concludes again", func() bool { return len(facts(t, ctx, s.log, eventlog.Jobset, jobset1, "concluded")) >= 2 })
	waitFor("change 1 concludes again", func() bool { return len(facts(t, ctx, s.log, eventlog.Change, change1, "concluded")) >= 2 })
	time.Sleep(2 * time.Second) // a repeat would land by now
	js := facts(t, ctx, s.log, eventlog.Jobset, jobset1, "concluded")
	chs := facts(t, ctx, s.log, eventlog.Change, change1, "concluded")
	if len(js) != 2 || len(chs) != 2 || js[1].GetId() != eventlog.ConcludedAgainID(jobset1, 1) || chs[1].GetId() != eventlog.ConcludedAgainID(change1, 1) {
		t.Fatalf("jobset concluded %d times, change %d times (ids %v, %v); want twice each, the second under round 1's id", len(js), len(chs), js, chs)
	}
	if c := js[1].GetJobsetConcluded().GetConclusion(); c != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("restarted jobset concluded %v, want failure (bad fails again)", c)
	}
	bad := drvState(t, ctx, s.log, ids["bad"])
	// Attempts 3 and 4 after the restart, and one more for each attempt
	// a kill interrupted (a process death keeps the retry).
	if bad.State != buildstate.Failed || bad.Attempt < 4 {
		t.Fatalf("bad after the restart: %+v, want failed after attempts 3 and 4 at least", bad)
	}
	retried := 0
	for _, q := range facts(t, ctx, s.log, eventlog.Drv, ids["bad"], "requeued") {
		if q.GetDrvRequeued().GetReason() == buildstate.ReasonRetried {
			retried++
		}
	}
	if retried != 1 {
		t.Fatalf("bad was retried %d times, want once", retried)
	}
	if d := drvState(t, ctx, s.log, ids["usesBad"]); d.State != buildstate.TransitiveFailure {
		t.Fatalf("usesBad after the restart: %s, want transitive-failure (it followed bad, and failed with it again)", d.State)
	}

	// A second change, cancelled once evaluated, killing the server
	// after the cancel.
	cr2, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo, Rev: second})
	if err != nil {
		t.Fatal(err)
	}
	change2, err := ekaci.Submit(ctx, s.log, cr2)
	if err != nil {
		t.Fatal(err)
	}
	jobset2 := eventlog.JobsetID(change2, "main")
	waitFor("change 2 is evaluated", func() bool { return len(facts(t, ctx, s.log, eventlog.Jobset, jobset2, "evaluated")) == 1 })
	for _, a := range facts(t, ctx, s.log, eventlog.Jobset, jobset2, "evaluated")[0].GetJobsetEvaluated().GetAttrs() {
		ids[a.GetAttr()] = a.GetDrvId()
	}
	if _, err := action.CancelChange(ctx, s.log, change2, who); err != nil {
		t.Fatal(err)
	}
	killAfter(2 * time.Second)
	waitFor("change 2 and its jobset conclude", func() bool {
		return len(facts(t, ctx, s.log, eventlog.Change, change2, "concluded")) == 1 && len(facts(t, ctx, s.log, eventlog.Jobset, jobset2, "concluded")) == 1
	})
	waitFor("what change 2 needed is settled", func() bool {
		for _, n := range []string{"slow1", "slow2", "slow3", "top"} {
			if !drvState(t, ctx, s.log, ids[n]).State.Settled() {
				return false
			}
		}
		return true
	})
	// Let slow1's build (if it started) end: its outcome comes after the
	// cancel and must change nothing.
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if c := facts(t, ctx, s.log, eventlog.Change, change2, "concluded"); len(c) != 1 || c[0].GetChangeConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_CANCELLED {
		t.Fatalf("change 2 concluded %v, want cancelled once", c)
	}
	if c := facts(t, ctx, s.log, eventlog.Jobset, jobset2, "concluded"); len(c) != 1 || c[0].GetJobsetConcluded().GetConclusion() != eventsv1.Conclusion_CONCLUSION_CANCELLED {
		t.Fatalf("jobset 2 concluded %v, want cancelled once", c)
	}
	if d := drvState(t, ctx, s.log, ids["slow1"]); d.State != buildstate.Interrupted || d.Interruption != eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED {
		t.Fatalf("slow1 after its build was let go: %+v, want still interrupted (cancelled)", d)
	}
	top := drvState(t, ctx, s.log, ids["top"])
	if top.State != buildstate.Interrupted || top.Interruption != eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED {
		t.Fatalf("top: %+v, want interrupted (cancelled)", top)
	}
	if n := len(facts(t, ctx, s.log, eventlog.Drv, ids["top"], "build_started")); n != 0 {
		t.Fatalf("top, needed only by the cancelled change, was started %d times", n)
	}
	if d := drvState(t, ctx, s.log, ids["good"]); d.State != buildstate.Succeeded {
		t.Fatalf("good, built for change 1, is %s after change 2's cancel", d.State)
	}

	// The admin read model, killed with the rest, answers as one folded
	// from the log afresh.
	last, err := s.log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(s.data, "admin.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	live := adminv1.NewAdminClient(conn)
	rebuilt := rebuildAdminModel(t, ctx, s.log, last)
	for _, id := range []string{jobset1, jobset2} {
		a, err1 := live.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: id, AfterSeq: last})
		b, err2 := rebuilt.GetJobset(id, "")
		if err1 != nil || err2 != nil || !proto.Equal(a, b) {
			t.Fatalf("jobset %s: live %v (%v), rebuilt %v (%v)", id, a, err1, b, err2)
		}
	}
	for name, id := range ids {
		a, err1 := live.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: id, AfterSeq: last})
		b, err2 := rebuilt.GetDerivation(id)
		if err1 != nil || err2 != nil || !proto.Equal(a, b) {
			t.Fatalf("derivation %s: live %v (%v), rebuilt %v (%v)", name, a, err1, b, err2)
		}
	}
}
