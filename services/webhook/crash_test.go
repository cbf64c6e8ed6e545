package webhook_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/githubtest"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/services/webhook"
)

// child serves the webhook on EKACI_ADDR against EKACI_NATS_URL until it
// is killed (TestSIGKILLedWebhook).
func child() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(os.Getenv("EKACI_NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	err = webhook.Run(ctx, webhook.Config{Events: eventlog.New(js), Logger: zerolog.Nop(), Secret: []byte(secret),
		Addr: os.Getenv("EKACI_ADDR"), Replicas: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestSIGKILLedWebhook sends a pull request's deliveries (opened, three
// pushes, another pull request and a push to the default branch between
// them) to the webhook in a child process SIGKILLed at random moments
// mid-delivery, and, as GitHub does, sends again each delivery that got
// no 2xx, to a restarted webhook; then every delivery once more, past the
// streams' duplicate window. The log must end as without crashes: each
// head requested once, each older head of the pull request cancelled once
// as superseded by the head that came next, nothing else cancelled.
func TestSIGKILLedWebhook(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EKACI_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (EKACI_CRASH_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := natstest.NewServer(t)
	_, js := natstest.Connect(t, srv)
	// A window of a second: the final redeliveries come after it, so only
	// the deliveries table and the guarded appends keep them no-ops.
	if err := eventlog.Provision(ctx, js, eventlog.StreamOptions{DuplicateWindow: time.Second}); err != nil {
		t.Fatal(err)
	}
	log := eventlog.New(js)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr + "/"

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	exited := make(chan struct{})
	start := func() {
		cmd = exec.Command(self, "-test.run", "^$")
		cmd.Env = append(os.Environ(), "EKACI_WEBHOOK_CHILD=1", "EKACI_NATS_URL="+srv.ClientURL(), "EKACI_ADDR="+addr)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan struct{})
		go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, exited)
	}
	kill := func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	defer func() { kill() }()
	start()

	sync := func(before, head byte) []byte {
		return githubtest.PullRequest(repo, "synchronize", githubtest.PR{Number: 7, Head: commit(head), Base: commit('b'), Before: commit(before)})
	}
	type sent struct {
		id   string
		body []byte
		evt  string
	}
	deliveries := []sent{
		{"d-open-a", githubtest.PullRequest(repo, "opened", pr7), "pull_request"},
		{"d-sync-c", sync('a', 'c'), "pull_request"},
		{"d-open-e", githubtest.PullRequest(repo, "opened", githubtest.PR{Number: 9, Head: commit('e'), Base: commit('b')}), "pull_request"},
		{"d-sync-d", sync('c', 'd'), "pull_request"},
		{"d-push-f", githubtest.Push(repo, "refs/heads/main", commit('b'), commit('f'), false), "push"},
		{"d-sync-9", sync('d', '9'), "pull_request"},
	}
	kills := 0
	deliver := func(d sent) {
		t.Helper()
		for tries := 0; ; tries++ {
			if tries > 200 {
				t.Fatalf("delivery %s: no 2xx after %d tries", d.id, tries)
			}
			select {
			case <-exited:
				start()
			default:
			}
			// About half the sends race a SIGKILL landing 0-40 ms later.
			var killed chan struct{}
			if rng.IntN(2) == 0 {
				killed = make(chan struct{})
				delay := time.Duration(rng.IntN(40_000)) * time.Microsecond
				go func() {
					defer close(killed)
					time.Sleep(delay)
					_ = cmd.Process.Signal(syscall.SIGKILL)
				}()
			}
			code, msg, err := githubtest.Deliver(ctx, url, []byte(secret), d.evt, d.id, d.body, "")
			if killed != nil {
				<-killed
				<-exited
				kills++
				start()
			}
			if err == nil && code/100 == 2 {
				return
			}
			if err == nil && code != http.StatusServiceUnavailable && code != http.StatusInternalServerError {
				t.Fatalf("delivery %s: %d %q, want 2xx (or a 5xx and a redelivery)", d.id, code, msg)
			}
			time.Sleep(20 * time.Millisecond) // connection refused while the webhook starts
		}
	}
	for _, d := range deliveries {
		deliver(d)
		if rng.IntN(3) == 0 { // GitHub redelivers some at once
			deliver(d)
		}
	}
	time.Sleep(1500 * time.Millisecond) // past the duplicate window
	for _, d := range deliveries {
		deliver(d)
	}
	t.Logf("%d SIGKILLs", kills)

	requested := map[string]int{}
	heads := map[string]string{}
	err = log.Read(ctx, 0, []string{eventlog.FactFilter(eventlog.Change, "requested")}, func(r eventlog.Record) error {
		h := r.Event.GetChangeRequested().GetHeadCommit()[:1]
		requested[h]++
		heads[r.ID] = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"a": 1, "c": 1, "d": 1, "9": 1, "e": 1, "f": 1}; fmt.Sprint(requested) != fmt.Sprint(want) {
		t.Errorf("heads requested %v, want each once: %v", requested, want)
	}
	cancelled := map[string][]string{}
	err = log.Read(ctx, 0, []string{eventlog.FactFilter(eventlog.Change, "cancelled")}, func(r eventlog.Record) error {
		cancelled[heads[r.ID]] = append(cancelled[heads[r.ID]], r.Event.GetChangeCancelled().GetActor().GetReason())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a": {"superseded by " + commit('c')}, "c": {"superseded by " + commit('d')}, "d": {"superseded by " + commit('9')}}
	if fmt.Sprint(cancelled) != fmt.Sprint(want) {
		t.Errorf("cancelled %v, want %v", cancelled, want)
	}
}
