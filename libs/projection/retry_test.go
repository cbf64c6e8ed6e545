package projection_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// onApply is states with a hook called before each fold.
type onApply struct {
	states
	hook func(rec eventlog.Record)
}

func (h onApply) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	h.hook(rec)
	return h.states.Apply(tx, rec, out)
}

// health records what the log's health hook was told.
type health struct {
	mu   sync.Mutex
	errs []string // "" for ready
}

func (h *health) set(_ string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := ""
	if err != nil {
		s = err.Error()
	}
	h.errs = append(h.errs, s)
}

func (h *health) seen(f func(string) bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		if f(e) {
			return true
		}
	}
	return false
}

// TestDecisionAppendSurvivesLostAckAndDisconnect (review finding 12): the
// model decides while every acknowledgement is lost (the server stores
// the decision, its ack never comes back), then the connection drops mid
// batch. Run must neither hang on the ack nor return — it would stop every
// stage of the all-in-one — but report itself not ready and retry until
// the decision is acknowledged, and then fold on; the decision is in the
// log once.
func TestDecisionAppendSurvivesLostAckAndDisconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := natstest.NewServer(t)
	_, djs := natstest.Connect(t, srv) // the test's own, direct connection
	if err := eventlog.Provision(ctx, djs, eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	direct := eventlog.New(djs)
	proxy := natstest.NewProxy(t, srv)
	nc, err := nats.Connect(proxy.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h := &health{}
	log := eventlog.New(js, eventlog.WithAckTimeout(time.Second), eventlog.WithHealthHook(h.set))

	db := projectiontest.OpenDB(t, "m.db")
	model := onApply{hook: func(rec eventlog.Record) {
		if rec.ID == "t" && rec.Fact == "discovered" {
			proxy.Mute() // from now on the server's answers are lost
		}
	}}
	r, err := projection.New(db, log, model)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	discover(t, ctx, direct, "a")
	natstest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(dump(t, db), "a=buildable") }, "a becomes buildable")
	discover(t, ctx, direct, "t")
	stream, err := djs.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, err := stream.GetLastMsgForSubject(ctx, "ekaci.evt.drv.t.buildable")
		return err == nil
	}, "the decision about t reached the log (its acknowledgement did not come back)")
	natstest.Eventually(t, 10*time.Second, func() bool {
		return h.seen(func(e string) bool { return strings.Contains(e, "acknowledgement") })
	}, "the model reports the lost acknowledgement as not ready")
	select {
	case err := <-done:
		t.Fatalf("Run returned on a lost acknowledgement: %v", err)
	default:
	}
	proxy.Cut() // the connection drops with the retried appends in flight

	end, err := direct.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := r.WaitFor(wctx, end); err != nil {
		select {
		case rerr := <-done:
			t.Fatalf("Run returned after the disconnect: %v", rerr)
		default:
			t.Fatal(err)
		}
	}
	if !strings.Contains(dump(t, db), "t=buildable") {
		t.Fatalf("rows %s: t's decision not folded", dump(t, db))
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.errs) > 0 && h.errs[len(h.errs)-1] == ""
	}, "the model reports itself ready again")
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("ekaci.evt.drv.t.buildable"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects["ekaci.evt.drv.t.buildable"]; n != 1 {
		t.Fatalf("t's decision is in the log %d times, want once", n)
	}
}
