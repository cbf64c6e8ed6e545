package meshtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// root is the repository's top directory.
var root, _ = filepath.Abs("../..")

// newRepo makes a fresh demo pull request (new salt, new commits) under
// dir/name and returns its head and base commits.
func newRepo(t *testing.T, dir, name string) (head, base string) {
	t.Helper()
	repo := filepath.Join(dir, name)
	if out, err := exec.Command(filepath.Join(root, "scripts/demo-repo.sh"), repo).CombinedOutput(); err != nil {
		t.Fatalf("demo-repo.sh: %v: %s", err, out)
	}
	rev := func(r string) string {
		out, err := exec.Command("git", "-C", repo, "rev-parse", r).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	// Readable by the stages' uid.
	if out, err := exec.Command("chmod", "-R", "a+rX", repo).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v: %s", err, out)
	}
	return rev("HEAD"), rev("HEAD~1")
}

// reference is `ekaci run` (all stages in one process, an embedded NATS,
// this machine's Nix) over a demo pull request of its own.
func reference(t *testing.T, ekaciBin, dir string) (Summary, time.Duration) {
	t.Helper()
	newRepo(t, dir, "reference")
	start := time.Now()
	cmd := exec.Command(ekaciBin, "run", "--output", "json", "--base", "HEAD~1", "--data-dir", filepath.Join(dir, "reference-data"),
		"--nats-port", "-1", "--nix-option", "substituters=", "--no-output-timeout", "2s", "--log-level", "warn", filepath.Join(dir, "reference"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	took := time.Since(start)
	// ekaci run exits 1 when something failed to build, which the demo's
	// pull request has.
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("ekaci run: %v\n%s", err, stderr.String())
	}
	s, err := ParseSummary(out)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return s, took
}

// scenario is one run of a fresh demo pull request through the mesh with
// a fault injected while it runs.
type scenario struct {
	name string
	// fault runs while the change runs; started delivers each
	// build_started fact (its builder's name) from the moment the change
	// is submitted. It must leave the mesh whole again when it returns.
	fault func(t *testing.T, r *run)
}

// run is what a fault sees.
type run struct {
	m       *Mesh
	log     *eventlog.Log
	started <-chan string // builders' names, one per build_started
	down    string        // a service the fault left stopped, started once the change concluded
}

// midBuild waits for a build to start and returns the builder building it.
func (r *run) midBuild(t *testing.T) string {
	t.Helper()
	select {
	case b := <-r.started:
		return b
	case <-time.After(5 * time.Minute):
		t.Fatal("no build started within 5 min")
		return ""
	}
}

func (r *run) eventsLeader(t *testing.T) string {
	t.Helper()
	l, err := Leader(context.Background(), r.log.JetStream(), eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var scenarios = []scenario{
	{"clean", nil},
	{"kill the events leader", func(t *testing.T, r *run) {
		r.midBuild(t)
		leader := r.eventsLeader(t)
		t.Logf("docker kill %s (EKACI_EVENTS leader)", leader)
		r.m.Kill(leader)
		time.Sleep(20 * time.Second)
		r.m.Start(leader)
	}},
	{"pause a node for 20 s", func(t *testing.T, r *run) {
		r.midBuild(t)
		leader := r.eventsLeader(t)
		t.Logf("docker pause %s (EKACI_EVENTS leader) for 20 s", leader)
		r.m.Pause(leader)
		time.Sleep(20 * time.Second)
		r.m.Unpause(leader)
	}},
	{"partition a node", func(t *testing.T, r *run) {
		r.midBuild(t)
		leader := r.eventsLeader(t)
		t.Logf("docker network disconnect %s (EKACI_EVENTS leader) for 20 s", leader)
		r.m.Disconnect(leader)
		time.Sleep(20 * time.Second)
		r.m.Connect(leader)
	}},
	{"SIGKILL builder, ingress and recorder", func(t *testing.T, r *run) {
		b := r.midBuild(t)
		for _, s := range []string{b, "ingress", "recorder"} {
			t.Logf("kill -9 %s", s)
			r.m.Crash(s)
			time.Sleep(3 * time.Second)
		}
	}},
	{"rolling restart", func(t *testing.T, r *run) {
		// From the submission on, one stage at a time: each stopped
		// (SIGTERM, its grace to drain), started, and running before the
		// next; the run is a few seconds long, the restarts span it.
		for _, s := range Stages {
			r.m.Restart(s, 10*time.Second)
			r.m.waitRunning(t, s, time.Minute)
		}
	}},
	{"two builders, one killed mid-build", func(t *testing.T, r *run) {
		b := r.midBuild(t)
		t.Logf("docker kill %s; the other builder goes on alone", b)
		r.m.Kill(b)
		// Left down until the change concludes: the other builder must
		// take over the killed one's attempts once its lease passes.
		r.down = b
	}},
}

func (m *Mesh) waitRunning(t *testing.T, service string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if st := m.Health()[service]; st == "starting" || st == "healthy" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running within %v after its restart", service, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMesh builds the images, starts the compose mesh under a project of
// its own, and runs the demo pull request through it with each fault of
// the issue, comparing every run's final states with `ekaci run`'s.
// It needs a Docker engine and docker-compose: `make mesh-test`.
func TestMesh(t *testing.T) {
	if os.Getenv("EKACI_MESH") != "1" {
		t.Skip("the mesh test builds images and runs containers: EKACI_MESH=1 (make mesh-test)")
	}
	if _, err := Docker("info", "-f", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("EKACI_MESH=1 but no Docker engine answers: %v", err)
	}
	// A tag of this run's own: another checkout's mesh test on the same
	// engine (a CI run beside a developer's) builds other binaries, and
	// must not retag the images under this run's containers.
	tag := fmt.Sprintf("meshtest-%d", os.Getpid())
	t.Cleanup(func() {
		if _, err := Docker("image", "rm", "ekaci/static:"+tag, "ekaci/nix:"+tag); err != nil {
			t.Logf("remove this run's images: %v", err)
		}
	})
	start := time.Now()
	build := exec.Command(filepath.Join(root, "deploy/images/build.sh"))
	build.Env = append(os.Environ(), "EKACI_TAG="+tag)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/images/build.sh: %v\n%s", err, out)
	} else {
		t.Logf("images: %s(%v)", out, time.Since(start).Round(time.Second))
	}
	for _, img := range []string{"ekaci/static:" + tag, "ekaci/nix:" + tag} {
		if user, err := Docker("image", "inspect", "-f", "{{.Config.User}}", img); err != nil || user != "65532:65532" {
			t.Fatalf("%s runs as %q (%v), want 65532:65532", img, user, err)
		}
	}

	dir := t.TempDir()
	want, took := reference(t, filepath.Join(root, "bin/images/bin/ekaci"), dir)
	t.Logf("reference: ekaci run concluded %s in %v, checks %v", want.Conclusion, took.Round(100*time.Millisecond), want.Checks)
	// The demo's checks run in the mesh too (its checker), and are
	// compared like its jobs.
	if len(want.Checks) == 0 {
		t.Fatal("ekaci run reported no check: the demo has two, and the mesh's must be compared with them")
	}

	m := New(t, Config{
		ComposeFiles: []string{filepath.Join(root, "deploy/compose/compose.yaml"), filepath.Join(root, "deploy/compose/compose.test.yaml")},
		Project:      fmt.Sprintf("ekacimesh%d", os.Getpid()), Tag: tag, Dir: dir,
	})
	start = time.Now()
	m.Up(5 * time.Minute)
	t.Logf("mesh healthy %v after up", time.Since(start).Round(100*time.Millisecond))
	var urls []string
	for _, n := range NATS {
		urls = append(urls, "nats://"+m.Port(n, 4222))
	}
	nc, js, err := Dial(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log := eventlog.New(js)
	if err := Replicated(context.Background(), js, 3); err != nil {
		t.Fatal(err)
	}

	t.Run("the sandbox's tests in the checker's container", func(t *testing.T) {
		sandboxInChecker(t, m, dir)
	})

	var times []string
	for i, sc := range scenarios {
		ok := t.Run(sc.name, func(t *testing.T) {
			name := fmt.Sprintf("demo-%d", i)
			head, base := newRepo(t, m.Repos, name)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			from, err := LastSeq(ctx, log)
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan string, 1024)
			sub, err := nc.Subscribe("ekaci.evt.drv.*.build_started", func(msg *nats.Msg) {
				rec, err := eventlog.Decode(msg.Subject, msg.Data, 0, time.Time{})
				if err != nil {
					return
				}
				if p, ok := rec.Event.GetPayload().(*eventsv1.Event_DrvBuildStarted); ok {
					select {
					case started <- p.DrvBuildStarted.GetBuilder():
					default:
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			r := &run{m: m, log: log, started: started}
			begin := time.Now()
			webhook := m.Port("webhook", 8080) // a new one after each restart
			change, err := Deliver(webhook, m.Secret, "file:///srv/repos/"+name, "demo/"+name, head, base)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			if sc.fault != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sc.fault(t, r)
				}()
			}
			var progress strings.Builder
			o, err := WaitConcluded(ctx, log, change, &progress)
			concluded := time.Since(begin)
			wg.Wait()
			if r.down != "" {
				m.Start(r.down)
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, progress.String())
			}
			times = append(times, fmt.Sprintf("%s: %v", sc.name, concluded.Round(100*time.Millisecond)))
			t.Logf("concluded %s in %v", conclusionOf(o.Conclusion), concluded.Round(100*time.Millisecond))
			got, err := Summarize(o)
			if err != nil {
				t.Fatal(err)
			}
			if d := Diff(want, got); len(d) > 0 {
				t.Errorf("final states differ from ekaci run's:\n  %s", strings.Join(d, "\n  "))
			}
			if sc.fault == nil {
				// ekaci status, from outside the mesh, prints the same.
				cmd := exec.Command(filepath.Join(root, "bin/images/bin/ekaci"), "status", change, "--output", "json", "--nats-url", strings.Join(urls, ","))
				out, err := cmd.Output()
				if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
					t.Fatalf("ekaci status: %v", err)
				}
				viaCLI, err := ParseSummary(out)
				if err != nil {
					t.Fatal(err)
				}
				if d := Diff(got, viaCLI); len(d) > 0 {
					t.Errorf("ekaci status differs from the change's facts:\n  %s", strings.Join(d, "\n  "))
				}
			}
			m.WaitHealthy(3 * time.Minute)
			if err := Replicated(ctx, js, 3); err != nil {
				t.Error(err)
			}
			hist, err := Histories(ctx, log, from)
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) == 0 {
				t.Error("no derivation discovered")
			}
			for id, h := range hist {
				if h.Illegal != "" || h.Completed > 1 || !h.Final.Settled() {
					t.Errorf("derivation %s: %d terminal facts, final state %v, refused %q; want one history ending settled", id, h.Completed, h.Final, h.Illegal)
				}
			}
			deadline := time.Now().Add(2 * time.Minute)
			for {
				pending, err := Pending(ctx, js)
				if err != nil {
					t.Fatal(err)
				}
				if len(pending) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("consumers left with messages 2 min after the change concluded:\n  %s", strings.Join(pending, "\n  "))
					break
				}
				time.Sleep(2 * time.Second)
			}
		})
		if !ok && sc.fault == nil {
			t.Fatal("the clean run failed: the fault scenarios would say nothing")
		}
	}
	t.Logf("time to conclude (reference ekaci run: %v):\n  %s", took.Round(100*time.Millisecond), strings.Join(times, "\n  "))
}

// sandboxInChecker runs the checker's sandbox tests (the hostile checks
// among them) in a container of the checker's service, with exactly the
// privileges compose.yaml gives it: what README says those privileges
// allow, and forbid, is proven there, not only on a host.
func sandboxInChecker(t *testing.T, m *Mesh, dir string) {
	bin := filepath.Join(dir, "sandbox.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "./internal/sandbox")
	build.Dir = filepath.Join(root, "services/checker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	out, err := m.Compose("run", "--rm", "--no-deps", "-T", "-e", "EKACI_SANDBOX_MOUNT_PROC=1", "-v", bin+":/sandbox.test:ro", "-w", "/tmp",
		"checker", "/sandbox.test", "-test.count=1", "-test.v", "-test.timeout=4m")
	if err != nil {
		t.Fatalf("the sandbox's tests in the checker's container: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "--- ") || strings.Contains(line, "enforcement") {
			t.Log(strings.TrimSpace(line))
		}
	}
	if !strings.Contains(out, "--- PASS: TestHostileChecks") {
		t.Fatalf("TestHostileChecks did not pass:\n%s", out)
	}
}

func conclusionOf(c eventsv1.Conclusion) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "CONCLUSION_"))
}
