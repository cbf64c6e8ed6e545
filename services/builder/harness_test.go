package builder

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/service"
)

// harness is a real embedded JetStream with ekaci's streams, derivations
// made buildable in it, requests published as the router does, and every
// report the builders publish collected.
type harness struct {
	t   *testing.T
	ctx context.Context
	js  jetstream.JetStream
	log *eventlog.Log

	mu      sync.Mutex
	reports []gotReport
}

type gotReport struct {
	rep   *workv1.BuildReport
	msgID string
	at    time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := t.Context()
	js := eventlogtest.JetStream(t, ctx)
	h := &harness{t: t, ctx: ctx, js: js, log: eventlog.New(js)}
	cons, err := js.CreateOrUpdateConsumer(ctx, eventlog.WorkStream, jetstream.ConsumerConfig{
		Durable: "test-reports", FilterSubject: eventlog.ReportsFilter, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		rep := &workv1.BuildReport{}
		if err := eventlog.DecodeWork(m.Data(), rep); err != nil {
			t.Errorf("undecodable report: %v", err)
		}
		h.mu.Lock()
		h.reports = append(h.reports, gotReport{rep: rep, msgID: m.Headers().Get(jetstream.MsgIDHeader), at: time.Now()})
		h.mu.Unlock()
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return h
}

// ready records a derivation as discovered and buildable (attempt 1) and
// returns its id and the buildable event's sequence.
func (h *harness) ready(drvPath string) (string, uint64) {
	h.t.Helper()
	id, err := eventlog.DrvID(drvPath)
	if err != nil {
		h.t.Fatal(err)
	}
	info := &eventsv1.DrvDiscovered{DrvPath: drvPath, Name: "x", System: service.CurrentSystem()}
	a, err := h.log.Append(h.ctx, id, &eventsv1.Event{Id: "discovered-" + id, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: info}}, eventlog.ExpectLast(0))
	if err != nil {
		h.t.Fatal(err)
	}
	cur, _ := buildstate.Fold([]*eventsv1.Event{{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: info}}})
	b, err := buildstate.DecideBuildable(cur, 0, info)
	if err != nil {
		h.t.Fatal(err)
	}
	a, err = h.log.Append(h.ctx, id, &eventsv1.Event{Id: "buildable-" + id + "-1", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: b}}, eventlog.ExpectLast(a.Seq))
	if err != nil {
		h.t.Fatal(err)
	}
	return id, a.Seq
}

// request publishes a build request as the router does.
func (h *harness) request(id, drvPath string, last uint64, msgID string) {
	h.t.Helper()
	req := &workv1.BuildRequest{DrvId: id, DrvPath: drvPath, System: service.CurrentSystem(),
		Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Attempt: 1, LastSeq: last}
	if _, err := eventlog.Publish(h.ctx, h.js, eventlog.BuildSubject(req.GetSystem(), req.GetClass()), msgID, req); err != nil {
		h.t.Fatal(err)
	}
}

// run starts a builder; stop cancels it and waits for it to return.
func (h *harness) run(cfg Config) (stop func()) {
	h.t.Helper()
	if cfg.Events == nil {
		cfg.Events = h.log
	}
	if cfg.Name == "" {
		cfg.Name = "test-builder"
	}
	if cfg.Pools == nil {
		cfg.Pools = []machines.Pool{{System: service.CurrentSystem(), Class: workv1.BuildClass_BUILD_CLASS_LOCAL, MaxJobs: 2}}
	}
	if cfg.BuildLogDir == "" {
		cfg.BuildLogDir = h.t.TempDir()
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel)
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("builder: %v", err)
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// got returns the reports so far.
func (h *harness) got() []gotReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]gotReport(nil), h.reports...)
}

// waitReports waits until there are n reports.
func (h *harness) waitReports(n int, within time.Duration) []gotReport {
	h.t.Helper()
	natstest.Eventually(h.t, within, func() bool { return len(h.got()) >= n }, "reports arrive")
	return h.got()
}

// state folds a derivation's history.
func (h *harness) state(id string) (buildstate.Drv, []eventlog.Record) {
	h.t.Helper()
	history, _, err := h.log.Load(h.ctx, eventlog.Drv, id)
	if err != nil {
		h.t.Fatal(err)
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, r := range history {
		evs[i] = r.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil {
		h.t.Fatal(err)
	}
	return cur, history
}
