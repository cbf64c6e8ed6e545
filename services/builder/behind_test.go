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
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/natstest"
)

// behindJS is the event log as an R3 stream can show it while its
// replicas apply a fact at different moments: the first append of a
// build_started is refused as a stale guard (the stream's leader had not
// applied the buildable the router routed), and event-log reads are then
// served by a replica that has only the derivation's discovery (behind),
// until caughtUp.
type behindJS struct {
	jetstream.JetStream
	behind jetstream.JetStream // holds the discovery only

	mu       sync.Mutex
	refused  bool
	caughtUp bool
	stale    int // reads served by the replica behind
}

func (j *behindJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.mu.Lock()
	refuse := !j.refused && strings.HasSuffix(msg.Subject, ".build_started")
	j.refused = j.refused || refuse
	j.mu.Unlock()
	if refuse {
		return nil, &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence"}
	}
	return j.JetStream.PublishMsg(ctx, msg, opts...)
}

func (j *behindJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	j.mu.Lock()
	behind := j.refused && !j.caughtUp && name == eventlog.EventsStream
	if behind {
		j.stale++
	}
	j.mu.Unlock()
	if behind {
		return j.behind.Stream(ctx, name)
	}
	return j.JetStream.Stream(ctx, name)
}

func (j *behindJS) staleReads() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stale
}

func (j *behindJS) catchUp() {
	j.mu.Lock()
	j.caughtUp = true
	j.mu.Unlock()
}

// TestReadBehindTheRequestIsNoStaleRequest: a build request whose start is
// refused, and whose history is then read from a replica that has not
// applied the buildable it was routed at (it reads as queued), is read
// again until the history reaches the request, and built. Dropped as
// stale, as it was, the derivation stayed Buildable with no request and
// never concluded (make bench-mesh, 3-node R3 cluster: 2 and 3 of 100,000
// derivations, the builder logging "stale build request dropped" with
// state queued).
func TestReadBehindTheRequestIsNoStaleRequest(t *testing.T) {
	h := newHarness(t)
	drv := "/nix/store/" + strings.Repeat("c", 32) + "-behind.drv"
	id, last := h.ready(drv)

	// The replica behind: the same discovery, nothing after it.
	behind := eventlogtest.JetStream(t, h.ctx)
	recs, _, err := h.log.Load(h.ctx, eventlog.Drv, id)
	if err != nil || len(recs) != 2 || recs[0].Event.GetDrvDiscovered() == nil {
		t.Fatalf("history %v (%v), want discovered and buildable", recs, err)
	}
	if _, err := eventlog.New(behind).Append(h.ctx, id, &eventsv1.Event{Id: recs[0].Event.GetId(), Payload: recs[0].Event.GetPayload()}, eventlog.ExpectLast(0)); err != nil {
		t.Fatal(err)
	}

	faulty := &behindJS{JetStream: h.js, behind: behind}
	h.run(Config{Name: "a", Events: eventlog.New(faulty), Noop: &Noop{}})
	h.request(id, drv, last, eventlog.BuildRequestID(id, 1))
	natstest.Eventually(t, 30*time.Second, func() bool { return faulty.staleReads() >= 2 }, "the history read from the replica behind twice (read once only: the request was dropped as stale)")
	faulty.catchUp()

	got := h.waitReports(1, time.Minute)
	if rep := got[0].rep; rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
		t.Fatalf("report %v, want a success", rep)
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return h.pending() == 0 }, "the request is acked")
}
