package checkrun_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubtest"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/services/notifier/checkrun"
)

// TestMain runs, in a child process of TestSIGKILLedPublisherPostsOnce,
// the publisher alone until it is killed; otherwise the tests, failing
// them when a goroutine outlives them (a publisher or progress loop still
// running after Run returned).
func TestMain(m *testing.M) {
	if os.Getenv("EKACI_CHECKRUN_CHILD") == "1" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m, natstest.ServerShutdownRace()...)
}

func child() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(os.Getenv("EKACI_NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	id, _ := strconv.ParseInt(os.Getenv("EKACI_APP_ID"), 10, 64)
	key, _ := os.ReadFile(os.Getenv("EKACI_APP_KEY"))
	app, err := githubapp.New(githubapp.Config{AppID: id, PrivateKey: key, BaseURL: os.Getenv("EKACI_API")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	err = checkrun.Run(ctx, checkrun.Config{Events: eventlog.New(js), Logger: zerolog.Nop(), App: app, DataDir: os.Getenv("EKACI_DATA"),
		Retry: githubapp.Retry{Backoff: 10 * time.Millisecond}, ProgressEvery: 50 * time.Millisecond, AckWait: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestSIGKILLedPublisherPostsOnce kills the publisher with SIGKILL at
// random moments while it reports a change, restarts it on the same read
// model, and checks GitHub ends with the same check runs as without
// crashes: each once, concluded as the facts say.
func TestSIGKILLedPublisherPostsOnce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EKACI_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (EKACI_CRASH_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := natstest.NewServer(t)
	_, js := natstest.Connect(t, srv)
	if err := eventlog.Provision(ctx, js, eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	log := eventlog.New(js)
	gh := githubtest.New(t)
	gh.Install(11, "octo/repo")
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(keyFile, gh.PrivateKeyPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, r := range history() {
		r.Event.Id = fmt.Sprintf("fact-%d", i)
		if _, err := log.Append(ctx, r.ID, r.Event); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(self, "-test.run", "^$")
		cmd.Env = append(os.Environ(), "EKACI_CHECKRUN_CHILD=1", "EKACI_NATS_URL="+srv.ClientURL(), "EKACI_API="+gh.URL,
			"EKACI_APP_ID="+strconv.FormatInt(gh.AppID, 10), "EKACI_APP_KEY="+keyFile, "EKACI_DATA="+data)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// 23 runs: configure, the gate, and one for each of the 21 failed new
	// attributes (DefaultMaxAttrRuns is 50). Without crashes that is 26
	// calls; each life is killed after a random 1 to 4 more calls, mid-work.
	const want = 23
	kills := 0
	for kills < 8 {
		before := len(gh.Calls())
		cmd := start()
		next := before + 1 + rng.IntN(4)
		for deadline := time.Now().Add(20 * time.Second); len(gh.Calls()) < next && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		kills++
		if len(gh.Calls()) == before {
			break // nothing left to do: the rest is checked below
		}
	}
	cmd := start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runs := gh.CheckRuns()
		done := 0
		for _, r := range runs {
			if r.Status == "completed" {
				done++
			}
		}
		if len(runs) >= want && done == len(runs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d kills: %d runs, %d completed, want %d completed", kills, len(runs), done, want)
		}
	}
	time.Sleep(500 * time.Millisecond) // a second run of a name would show by now
	count := map[string]int{}
	for _, r := range gh.CheckRuns() {
		count[r.Name]++
		want := "failure"
		switch r.Name {
		case "ekaci: configure":
			want = "success"
		}
		if r.Conclusion != want {
			t.Errorf("%s: %s, want %s", r.Name, r.Conclusion, want)
		}
	}
	for name, n := range count {
		if n != 1 {
			t.Errorf("%d check runs named %q after %d SIGKILLs, want 1", n, name, kills)
		}
	}
	if len(count) != want {
		t.Errorf("%d distinct check runs, want %d", len(count), want)
	}
	t.Logf("%d SIGKILLs, %d API calls", kills, len(gh.Calls()))
}
