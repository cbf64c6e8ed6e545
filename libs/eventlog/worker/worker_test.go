package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog/worker"
	"github.com/ekaci/ekaci/libs/natstest"
)

// runners runs a per-message handler through Run, and through RunBatch one
// batch at a time.
var runners = []struct {
	name string
	run  func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler) error
}{
	{"Run", func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler) error {
		return worker.Run(ctx, js, cfg, h, zerolog.Nop())
	}},
	{"RunBatch", func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler) error {
		return worker.RunBatch(ctx, js, cfg, func(ctx context.Context, msgs []jetstream.Msg) []error {
			errs := make([]error, len(msgs))
			for i, m := range msgs {
				errs[i] = h(ctx, m)
			}
			return errs
		}, zerolog.Nop())
	}},
}

func TestRetryPermanentAndDrain(t *testing.T) {
	for _, r := range runners {
		t.Run(r.name, func(t *testing.T) { testRetryPermanentAndDrain(t, r.run) })
	}
}

func testRetryPermanentAndDrain(t *testing.T, run func(context.Context, jetstream.JetStream, worker.Config, worker.Handler) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"w.flaky", "w.bad", "w.ok"} {
		if _, err := js.Publish(ctx, s, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	h := func(ctx context.Context, m jetstream.Msg) error {
		mu.Lock()
		seen[m.Subject()]++
		n := seen[m.Subject()]
		mu.Unlock()
		switch {
		case m.Subject() == "w.flaky" && n == 1:
			return errors.New("transient")
		case m.Subject() == "w.bad":
			return worker.Permanent(fmt.Errorf("cannot ever work"))
		}
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(rctx, js, worker.Config{Stream: "W", Durable: "t", Filters: []string{"w.>"}, Backoff: 10 * time.Millisecond, Concurrency: 2}, h)
	}()
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["w.flaky"] == 2 && seen["w.ok"] == 1 && seen["w.bad"] == 1
	}, "flaky handled twice, ok and bad once")
	drained(t, ctx, js, 10*time.Second, "work queue emptied by acks and the termination")
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["w.bad"] != 1 {
		t.Fatalf("permanent failure handled %d times, want 1", seen["w.bad"])
	}
}

// TestHeartbeatsKeepLongWorkFromRedelivery: a handler running three times
// the ack wait is not redelivered meanwhile, because the worker sends
// heartbeats; without them the server would hand the message out again.
func TestHeartbeatsKeepLongWorkFromRedelivery(t *testing.T) {
	for _, r := range runners {
		t.Run(r.name, func(t *testing.T) { testHeartbeats(t, r.run) })
	}
}

func testHeartbeats(t *testing.T, run func(context.Context, jetstream.JetStream, worker.Config, worker.Handler) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "w.long", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := 0
	finished := make(chan struct{})
	h := func(ctx context.Context, m jetstream.Msg) error {
		mu.Lock()
		runs++
		first := runs == 1
		mu.Unlock()
		if first {
			time.Sleep(3 * time.Second)
			close(finished)
		}
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(rctx, js, worker.Config{Stream: "W", Durable: "hb", Filters: []string{"w.>"}, AckWait: time.Second, Concurrency: 2}, h)
	}()
	<-finished
	// Absence, proven by waiting: without heartbeats the server hands the
	// message out again one ack wait (1 s) after each delivery, which the
	// second slot would run at once; 1.5 ack waits past the first run's end
	// cover a redelivery due then.
	time.Sleep(1500 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Fatalf("handled %d times, want once (heartbeats missing?)", runs)
	}
}

// TestRunBatchHandsOverWhatIsWaiting: messages queued before the worker
// starts reach the handler several at a time, each exactly once, and a
// batch's failed message alone is retried.
func TestRunBatchHandsOverWhatIsWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("w.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	var mu sync.Mutex
	seen := map[string]int{}
	largest := 0
	h := func(ctx context.Context, msgs []jetstream.Msg) []error {
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, len(msgs))
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			seen[m.Subject()]++
			if m.Subject() == "w.7" && seen["w.7"] == 1 {
				errs[i] = errors.New("transient")
			}
		}
		return errs
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- worker.RunBatch(rctx, js, worker.Config{Stream: "W", Durable: "b", Filters: []string{"w.>"}, Backoff: 10 * time.Millisecond, Batch: 64}, h, zerolog.Nop())
	}()
	drained(t, ctx, js, 10*time.Second, "every message acknowledged")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if largest < 2 || largest > 64 {
		t.Fatalf("largest batch %d, want 2..64", largest)
	}
	for i := range n {
		want := 1
		if i == 7 {
			want = 2
		}
		if got := seen[fmt.Sprintf("w.%d", i)]; got != want {
			t.Fatalf("w.%d handled %d times, want %d", i, got, want)
		}
	}
}

// TestWaitingMessagesAreNotRedeliveredBehindLongWork: with no more
// delivered than there are slots, a message never waits for a slot past
// the ack wait, so work longer than the ack wait is done once per message.
// With the default bound (four per slot) the waiting ones are delivered
// again meanwhile, and handled twice.
func TestWaitingMessagesAreNotRedeliveredBehindLongWork(t *testing.T) {
	for _, tt := range []struct {
		name      string
		maxAck    int
		wantTwice bool
	}{{"one per slot", 1, false}, {"default", 0, true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, js := natstest.Connect(t, natstest.NewServer(t))
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := js.Publish(ctx, fmt.Sprintf("w.%d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			runs := map[string]int{}
			h := func(ctx context.Context, m jetstream.Msg) error {
				mu.Lock()
				runs[m.Subject()]++
				mu.Unlock()
				time.Sleep(1500 * time.Millisecond) // longer than the ack wait
				return nil
			}
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- worker.Run(rctx, js, worker.Config{Stream: "W", Durable: "slow", Filters: []string{"w.>"},
					AckWait: time.Second, Concurrency: 1, MaxAckPending: tt.maxAck}, h, zerolog.Nop())
			}()
			drained(t, ctx, js, 30*time.Second, "every message acknowledged")
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			twice := false
			for subj, n := range runs {
				if n > 1 {
					twice = true
				}
				if n < 1 {
					t.Errorf("%s never handled", subj)
				}
			}
			if twice != tt.wantTwice {
				t.Fatalf("handled %v; some twice = %v, want %v", runs, twice, tt.wantTwice)
			}
		})
	}
}

// drained waits until the work stream W holds no message: every one
// acknowledged or terminated.
func drained(t *testing.T, ctx context.Context, js jetstream.JetStream, within time.Duration, what string) {
	t.Helper()
	natstest.Eventually(t, within, func() bool {
		s, err := js.Stream(ctx, "W")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, what)
}

// TestGiveUpRecordsATerminalFact: a message refused as permanent and one
// failing on every delivery both reach GiveUp, with the handler's last
// error, before they are terminated; the counter says whether it recorded.
func TestGiveUpRecordsATerminalFact(t *testing.T) {
	for _, r := range runners {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, js := natstest.Connect(t, natstest.NewServer(t))
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"w.bad", "w.broken", "w.ok"} {
				if _, err := js.Publish(ctx, s, []byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			delivered := map[string]int{}
			gaveUp := map[string]string{}
			counted := map[bool]int{}
			h := func(ctx context.Context, m jetstream.Msg) error {
				mu.Lock()
				delivered[m.Subject()]++
				n := delivered[m.Subject()]
				mu.Unlock()
				switch m.Subject() {
				case "w.bad":
					return worker.Permanent(errors.New("cannot ever work"))
				case "w.broken":
					return fmt.Errorf("delivery %d broke", n)
				}
				return nil
			}
			cfg := worker.Config{
				Stream: "W", Durable: "t", Filters: []string{"w.>"}, Backoff: 10 * time.Millisecond, MaxDeliver: 3,
				GiveUp: func(ctx context.Context, m jetstream.Msg, cause error) error {
					mu.Lock()
					defer mu.Unlock()
					gaveUp[m.Subject()] = cause.Error()
					if m.Subject() == "w.broken" {
						return nil
					}
					return errors.New("the log refuses it too")
				},
				GaveUp: func(consumer string, recorded bool) {
					mu.Lock()
					defer mu.Unlock()
					counted[recorded]++
				},
			}
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.run(rctx, js, cfg, h) }()
			natstest.Eventually(t, 15*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return counted[true]+counted[false] == 2
			}, "both failing messages given up")
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if got, want := gaveUp["w.broken"], "delivery 3 broke"; got != want {
				t.Errorf("GiveUp(w.broken) cause = %q, want %q", got, want)
			}
			if got := gaveUp["w.bad"]; got == "" {
				t.Errorf("GiveUp was not called for the permanent refusal")
			}
			if _, ok := gaveUp["w.ok"]; ok {
				t.Errorf("GiveUp was called for a message handled fine")
			}
			if delivered["w.broken"] != 3 || delivered["w.bad"] != 1 {
				t.Errorf("deliveries = %v, want w.broken 3 and w.bad 1", delivered)
			}
			if counted[true] != 1 || counted[false] != 1 {
				t.Errorf("GaveUp counted recorded=%d unrecorded=%d, want 1 and 1", counted[true], counted[false])
			}
		})
	}
}

// TestCrashLoopIsGivenUpAndAStopIsNot: a message whose every handling
// ended without a settlement (a stage that crashed on it each time) is
// given up on receipt once over MaxDeliver+1, without running the handler
// again; a handler cut off by the stage's own stop on its last delivery is
// not given up: the next life of the stage handles it once more.
func TestCrashLoopIsGivenUpAndAStopIsNot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "w.crash", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var handled int
	var causes []string
	cfg := worker.Config{
		Stream: "W", Durable: "t", Filters: []string{"w.>"}, Backoff: 10 * time.Millisecond, MaxDeliver: 2, AckWait: time.Second,
		GiveUp: func(ctx context.Context, m jetstream.Msg, cause error) error {
			mu.Lock()
			defer mu.Unlock()
			causes = append(causes, cause.Error())
			return nil
		},
	}
	// Three "lives" that each took the message and died without settling it.
	cons, err := worker.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		natstest.Eventually(t, 10*time.Second, func() bool {
			b, err := cons.FetchNoWait(1)
			if err != nil {
				return false
			}
			n := 0
			for range b.Messages() {
				n++
			}
			return n == 1
		}, "the message delivered again")
	}
	h := func(ctx context.Context, m jetstream.Msg) error {
		mu.Lock()
		defer mu.Unlock()
		handled++
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- worker.Run(rctx, js, cfg, h, zerolog.Nop()) }()
	natstest.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(causes) == 1
	}, "the crash-looping message given up")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if handled != 0 {
		t.Errorf("the handler ran %d times on a message over MaxDeliver, want 0", handled)
	}
	if !strings.Contains(causes[0], "delivered 4 times") {
		t.Errorf("GiveUp cause = %q, want it to say it was delivered 4 times", causes[0])
	}
	causes = nil
	mu.Unlock()

	// A stop on the last delivery: the handler sees its context end and
	// returns its error; nothing is given up and the message comes back.
	if _, err := js.Publish(ctx, "w.stopped", []byte("y")); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 4)
	slow := func(ctx context.Context, m jetstream.Msg) error {
		md, _ := m.Metadata()
		if md.NumDelivered < 2 {
			return errors.New("first delivery fails")
		}
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	rctx, stop = context.WithCancel(ctx)
	go func() { done <- worker.Run(rctx, js, cfg, slow, zerolog.Nop()) }()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the second delivery never came")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(causes) != 0 {
		t.Errorf("a handler stopped by the stage's own stop was given up: %q", causes)
	}
	mu.Unlock()
	var again []uint64
	rctx, stop = context.WithCancel(ctx)
	go func() {
		done <- worker.Run(rctx, js, cfg, func(ctx context.Context, m jetstream.Msg) error {
			md, _ := m.Metadata()
			mu.Lock()
			again = append(again, md.NumDelivered)
			mu.Unlock()
			return nil
		}, zerolog.Nop())
	}()
	natstest.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(again) == 1 || len(causes) > 0
	}, "the stopped message handled by the next life")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(causes) != 0 || len(again) != 1 || again[0] != 3 {
		t.Errorf("after a stop on the last delivery: handled at deliveries %v, given up %q; want handled once more (delivery 3), not given up", again, causes)
	}
}

// TestRetryAfterHandsBackWithItsDelay: a handler that asks for its message
// again after d (worker.RetryAfter, e.g. a lease it waits out) gets it back
// no sooner than d, and the worker logs no warning: neither a retry of a
// failure nor a lost ack (a handler that put its message back itself and
// returned nil had its message "acked" once more, which nats.go refuses,
// and the worker warned that the ack was lost).
func TestRetryAfterHandsBackWithItsDelay(t *testing.T) {
	const after = 1500 * time.Millisecond
	for _, r := range []struct {
		name string
		run  func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler, log zerolog.Logger) error
	}{
		{"Run", func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler, log zerolog.Logger) error {
			return worker.Run(ctx, js, cfg, h, log)
		}},
		{"RunBatch", func(ctx context.Context, js jetstream.JetStream, cfg worker.Config, h worker.Handler, log zerolog.Logger) error {
			return worker.RunBatch(ctx, js, cfg, func(ctx context.Context, msgs []jetstream.Msg) []error {
				errs := make([]error, len(msgs))
				for i, m := range msgs {
					errs[i] = h(ctx, m)
				}
				return errs
			}, log)
		}},
	} {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, js := natstest.Connect(t, natstest.NewServer(t))
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, "w.wait", []byte("x")); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var at []time.Time
			h := func(ctx context.Context, m jetstream.Msg) error {
				mu.Lock()
				defer mu.Unlock()
				at = append(at, time.Now())
				if len(at) == 1 {
					return worker.RetryAfter(after, errors.New("its holder is late"))
				}
				return nil
			}
			var logged syncBuffer
			log := zerolog.New(&logged).Level(zerolog.InfoLevel)
			cfg := worker.Config{Stream: "W", Durable: "t", Filters: []string{"w.>"}, Backoff: 10 * time.Millisecond,
				GiveUp: func(context.Context, jetstream.Msg, error) error {
					t.Error("GiveUp called for a message handed back at its handler's request")
					return nil
				}}
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.run(rctx, js, cfg, h, log) }()
			drained(t, ctx, js, 20*time.Second, "the message is handled again and acked")
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(at) != 2 {
				t.Fatalf("handled %d times, want 2", len(at))
			}
			if gap := at[1].Sub(at[0]); gap < after-100*time.Millisecond {
				t.Errorf("handed back after %v, want no sooner than %v", gap, after)
			}
			if s := logged.String(); s != "" {
				t.Errorf("the worker logged %q, want nothing (no retry of a failure, no lost ack)", s)
			}
		})
	}
}

// syncBuffer is a log sink the worker's goroutines may write concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunWhileDrains: when take ends, RunWhile takes no new message, lets
// the running handler go on with a live context to its end, and returns;
// what came meanwhile waits in the consumer for the next RunWhile.
func TestRunWhileDrains(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var handled []string
	started, release := make(chan struct{}, 1), make(chan struct{})
	var ctxErr error
	h := func(hctx context.Context, m jetstream.Msg) error {
		if m.Subject() == "w.first" {
			started <- struct{}{}
			<-release
			ctxErr = hctx.Err()
		}
		mu.Lock()
		handled = append(handled, m.Subject())
		mu.Unlock()
		return nil
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), handled...)
	}
	cfg := worker.Config{Stream: "W", Durable: "t", Filters: []string{"w.>"}, Concurrency: 2, AckWait: 2 * time.Second}
	take, drain := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- worker.RunWhile(ctx, take, js, cfg, h, zerolog.Nop()) }()
	if _, err := js.Publish(ctx, "w.first", nil); err != nil {
		t.Fatal(err)
	}
	<-started
	drain()
	if _, err := js.Publish(ctx, "w.second", nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("RunWhile = %v", err)
	}
	if g := got(); len(g) != 1 || g[0] != "w.first" || ctxErr != nil {
		t.Fatalf("after the drain: handled %v (the running handler's context: %v), want w.first alone, its context live", g, ctxErr)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { done <- worker.RunWhile(rctx, rctx, js, cfg, h, zerolog.Nop()) }()
	natstest.Eventually(t, 30*time.Second, func() bool { return len(got()) == 2 }, "the message that came during the drain handled after it")
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
