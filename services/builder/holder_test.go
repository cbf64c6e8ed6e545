package builder

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/natstest"
)

// lostAckJS is a JetStream whose first append of a build_started lands
// but is answered with a timeout (an ack lost while a NATS leader moves),
// and whose event-log reads then fail until released: the builder cannot
// learn for a while that the start it thinks failed is in the log.
type lostAckJS struct {
	jetstream.JetStream

	mu       sync.Mutex
	lost     bool // the start's ack was lost
	released bool // reads answer again
	failed   int  // reads refused since
}

func (j *lostAckJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, msg, opts...)
	j.mu.Lock()
	defer j.mu.Unlock()
	if err == nil && !j.lost && strings.HasSuffix(msg.Subject, ".build_started") {
		j.lost = true
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

func (j *lostAckJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	j.mu.Lock()
	refuse := j.lost && !j.released && name == eventlog.EventsStream
	if refuse {
		j.failed++
	}
	j.mu.Unlock()
	if refuse {
		return nil, context.DeadlineExceeded
	}
	return j.JetStream.Stream(ctx, name)
}

func (j *lostAckJS) refusals() (lost bool, failed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lost, j.failed
}

func (j *lostAckJS) release() {
	j.mu.Lock()
	j.released = true
	j.mu.Unlock()
}

// TestLostStartAckKeepsTheRequest: a builder whose build_started landed
// but whose ack was lost keeps the request and goes on as the attempt's
// holder once it can read the log again. Handed back (as it was), the
// request reached the other builder of the pool, which kept it as a copy
// of an attempt a live builder holds, waiting for an end that never came:
// the change never concluded (seen in make mesh-test's "kill the events
// leader" scenario).
func TestLostStartAckKeepsTheRequest(t *testing.T) {
	h := newHarness(t)
	faulty := &lostAckJS{JetStream: h.js}
	h.run(Config{Name: "a", Events: eventlog.New(faulty), Noop: &Noop{}})
	natstest.Eventually(t, 30*time.Second, func() bool { _, ok := h.heartbeatOf("a"); return ok }, "a is up")

	drv := "/nix/store/" + strings.Repeat("b", 32) + "-lost-ack.drv"
	id, last := h.ready(drv)
	h.request(id, drv, last, eventlog.BuildRequestID(id, 1))
	natstest.Eventually(t, 30*time.Second, func() bool { lost, _ := faulty.refusals(); return lost }, "a's start lands with its ack lost")
	// The other builder of the pool is there to be handed the request.
	h.run(Config{Name: "b", Noop: &Noop{}})
	natstest.Eventually(t, 30*time.Second, func() bool { _, ok := h.heartbeatOf("b"); return ok }, "b is up")
	// a tries to read the log several times, failing, while b pulls (or,
	// handed back, the request is delivered again).
	natstest.Eventually(t, time.Minute, func() bool {
		_, n := faulty.refusals()
		return n >= 3 || h.delivered() >= 3
	}, "a reads the log again, or the request is delivered again")
	faulty.release()
	if n := h.delivered(); n != 1 {
		t.Fatalf("the request was delivered %d times, want once: kept by the builder that may hold its attempt", n)
	}

	got := h.waitReports(1, time.Minute)
	rep := got[0].rep
	if rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED || !strings.HasPrefix(rep.GetHolder(), "a-") {
		t.Fatalf("report %v, want a's success as the attempt's holder", rep)
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return h.pending() == 0 }, "the request is acked")
	time.Sleep(time.Second)
	if got := h.got(); len(got) != 1 {
		t.Fatalf("%d reports, want one", len(got))
	}
}
