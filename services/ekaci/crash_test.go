package ekaci_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/ekaci"
	"github.com/ekaci/ekaci/services/ekaci/internal/chaos"
)

func chaosEnv(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

// TestCrashesChangeNoVerdict kills `ekaci run` with SIGKILL at random
// moments while it builds a random graph of real derivations (some fail
// for good, some fail once), runs it again until it concludes, and checks
// every derivation's final state against the graph: a derivation no crash
// interrupted ends exactly as the graph says, an interrupted one as its
// own recorded attempts decide; and with fewer than three kills, where no
// derivation can be interrupted by policy, every final state is exactly the
// crash-free run's (EKACI_CHAOS_EXACT=0 or 1 overrides); no Nix process of
// the test outlives a kill. Before issue 10, 144 to 226 of 300 final states were wrong after
// two kills (batched builds).
//
// EKACI_CHAOS_DRVS (default 100), EKACI_CHAOS_KILLS (2), EKACI_CHAOS_SEED
// (1) and EKACI_CHAOS_REPEAT (1: seeds SEED..SEED+REPEAT-1) size it;
// `make chaos` runs a large one.
func TestCrashesChangeNoVerdict(t *testing.T) {
	requireNix(t)
	n := chaosEnv(t, "EKACI_CHAOS_DRVS", 100)
	kills := chaosEnv(t, "EKACI_CHAOS_KILLS", 2)
	seed := chaosEnv(t, "EKACI_CHAOS_SEED", 1)
	repeat := max(1, chaosEnv(t, "EKACI_CHAOS_REPEAT", 1))
	bin := filepath.Join(t.TempDir(), "ekaci")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ekaci/ekaci/services/ekaci/cmd/ekaci").CombinedOutput(); err != nil {
		t.Fatalf("build ekaci: %v\n%s", err, out)
	}
	for r := range repeat {
		s := uint64(seed + r)
		t.Run(fmt.Sprintf("seed-%d", s), func(t *testing.T) { crashRun(t, bin, n, kills, s) })
	}
}

func crashRun(t *testing.T, bin string, n, kills int, seed uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	markers, err := os.MkdirTemp("", "ekaci-chaos-markers-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markers) })
	if err := os.Chmod(markers, 0o777); err != nil { // builders run as Nix's build users
		t.Fatal(err)
	}
	salt := fmt.Sprintf("chaos-%d-%d", seed, time.Now().UnixNano())
	g := chaos.New(n, seed, salt, markers)
	repo := filepath.Join(t.TempDir(), "repo")
	if err := g.WriteRepo(repo); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-q", "-m", "graph")
	drvs := instantiateAll(t, repo, len(g.G.Nodes))
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"run", "--data-dir", data, "--nats-port", "-1", "--max-jobs", "2", "--fod-max-jobs", "1",
		"--no-output-timeout", "60s", "--nix-option", "substituters=", "--log-format", "json", "--output", "json", repo}
	r := rand.New(rand.NewPCG(seed, 0x6b111))

	killed := 0
	for k := range kills {
		// A random moment while Nix builds: counted from the first Nix
		// process of the test's builds, not from the start (on a loaded
		// machine evaluation alone can take longer than any fixed delay,
		// and a kill before the builds start tests little of the builder).
		delay := time.Duration(200+r.IntN(3000)) * time.Millisecond
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		begun := time.Now()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		building := time.NewTicker(50 * time.Millisecond)
		concluded := false
		for len(nixProcsOf(salt, drvs)) == 0 && !concluded {
			select {
			case err := <-exited:
				t.Logf("run %d concluded before any build was seen (%v)", k+1, err)
				concluded = true
			case <-building.C:
			case <-ctx.Done():
				t.Fatal("no build of the test started")
			}
		}
		building.Stop()
		if concluded {
			continue
		}
		buildsAt := time.Since(begun)
		select {
		case err := <-exited:
			t.Logf("run %d concluded before its kill, %v after its builds began (%v)", k+1, delay, err)
			continue
		case <-time.After(delay):
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		killed++
		t.Logf("run %d killed %v after its builds began (%v after its start)", k+1, delay, buildsAt+delay)
		assertNoNixOf(t, salt, drvs, 10*time.Second)
	}
	if kills > 0 && killed == 0 {
		t.Fatal("every run concluded before its kill: the graph is too small for this test to prove anything")
	}

	var stdout, stderr bytes.Buffer
	final := exec.CommandContext(ctx, bin, args...)
	final.Stdout, final.Stderr = &stdout, &stderr
	err = final.Run()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("final run: %v\n%s", err, lastLines(stderr.String(), 30))
	}
	assertNoNixOf(t, salt, drvs, 10*time.Second)

	// Read every derivation's history from the data dir the runs left.
	app, err := ekaci.Start(ctx, ekaci.Config{DataDir: data, NatsPort: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	histories := make([][]*eventsv1.Event, len(drvs))
	for i, d := range drvs {
		id, err := eventlog.DrvID(d)
		if err != nil {
			t.Fatal(err)
		}
		recs, _, err := app.Events().Load(ctx, eventlog.Drv, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			histories[i] = append(histories[i], rec.Event)
		}
	}
	survivor, _ := os.ReadFile(filepath.Join(data, "builder", "holder")) // the last life's holder id
	rep := g.Check(histories, strings.TrimSpace(string(survivor)))
	t.Logf("seed %d: %d derivations, %d kills, %d interruptions recorded, %d final states differ from the crash-free run (each explained by them)",
		seed, len(drvs), killed, rep.Interrupted, rep.Deviated)
	for _, h := range rep.Hit {
		t.Logf("interrupted: %s", h)
	}
	for _, w := range rep.Wrong {
		t.Error(w)
	}
	// Exact: a dead holder's attempt is re-queued without using the
	// derivation's retry, so no crash may change a final state, unless one
	// derivation is hit by maxDeathsInARow kills in a row (then it is
	// interrupted, by policy: recorder.MaxInfrastructureInterruptions).
	// EKACI_CHAOS_EXACT=0 accepts every deviation the recorded
	// interruptions explain; =1 asks for exactness with any number of kills.
	const maxDeathsInARow = 3
	exact := kills < maxDeathsInARow
	switch os.Getenv("EKACI_CHAOS_EXACT") {
	case "0":
		exact = false
	case "1":
		exact = true
	}
	if exact && rep.Deviated > 0 {
		t.Errorf("%d final states differ from the crash-free run", rep.Deviated)
	}
	// A kill interrupts only what was being built (or judged and not yet
	// reported) at that moment: about one per lane (2 local, 1 FOD), never
	// a whole queue.
	for holder, n := range rep.Deaths {
		if n > 4 {
			t.Errorf("%d attempts of the killed builder %s reported dead, more than it can have had in flight", n, holder)
		}
	}
}

// instantiateAll returns the .drv of every attribute d0..d<n-1>.
func instantiateAll(t *testing.T, repo string, n int) []string {
	t.Helper()
	args := []string{"--option", "substituters", "", filepath.Join(repo, "default.nix")}
	for i := range n {
		args = append(args, "-A", chaos.Attr(i))
	}
	out, err := exec.Command("nix-instantiate", args...).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	paths := strings.Fields(string(out))
	if len(paths) != n {
		t.Fatalf("%d paths for %d attributes", len(paths), n)
	}
	return paths
}

// assertNoNixOf waits until no builder of this test's derivations (they
// carry its salt in their environment) and no nix-store given one of them
// is left, then fails if some still are.
func assertNoNixOf(t *testing.T, salt string, drvs []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := nixProcsOf(salt, drvs)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("processes of the test's builds still running after ekaci died: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nixProcsOf(salt string, drvs []string) []int {
	want := []byte("salt=" + salt + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		ours := bytes.Contains(env, want)
		if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && !ours && bytes.Contains(cmdline, []byte("nix-store")) {
			for _, d := range drvs {
				if bytes.Contains(cmdline, []byte(d)) {
					ours = true
					break
				}
			}
		}
		if !ours {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndexByte(stat, ')'); err == nil && i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
