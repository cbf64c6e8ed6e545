// Package router is the scheduler's second and third tiers: it takes each
// Buildable derivation, picks the pool that must build it — the FOD pool for
// fixed-output derivations, the local builder for preferLocalBuild, else the
// remote pool or local — and queues a build request on
// ekaci.work.build.<system>.<class>. A derivation no configured builder can
// take (its system or required features unmet) is recorded as Interrupted
// (unsatisfiable) instead of waiting forever; one whose request cannot be
// queued after the last retry is recorded as Interrupted (infrastructure)
// with the error, so no derivation stays Buildable with nothing queued.
// Both are guarded (ExpectLast on the buildable fact): they never land
// after anything else happened to the derivation.
//
// It decides which pool builds each buildable derivation, or that none can
// (interrupted).
package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/telemetry"
)

// View is what the router knows of the builders when it decides.
type View struct {
	// Healthy reports whether a remote builder answers; nil: all do. The
	// local and FOD pools are always healthy.
	Healthy func(name string) bool
	// LocalBusy is how many builds are running or waiting on the local
	// pool of a system; nil: none.
	LocalBusy func(system string) int
}

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	// Routes are the builders work may go to (machines.Topology.Routes).
	Routes []machines.Route
	// Health, when remote builders are configured, says which answer.
	// Whoever made it keeps it current (runs Health.Run): in the
	// all-in-one the router and the builder share one.
	Health *machines.Health
	// Metrics, when set, counts buildable events given up
	// (ekaci_messages_given_up_total).
	Metrics *telemetry.Metrics
	// Backoff and MaxDeliver tune the retries of a request that cannot be
	// queued (defaults: the worker's, 200 ms doubling, 10 tries).
	Backoff    time.Duration
	MaxDeliver int
}

// maxDetailBytes bounds the error quoted in an interruption.
const maxDetailBytes = 2 << 10

// Route picks the class for a buildable derivation; ok is false when no
// builder can take it, healthy or not. Fixed-output derivations go to the
// FOD pool, preferLocalBuild to the local builder; the rest go local while
// the local pool has a free slot, else to a healthy remote builder, else
// local. Work only an unhealthy remote builder can take is queued for the
// remote pool, which holds it until a builder answers again.
func Route(routes []machines.Route, b *eventsv1.DrvBuildable, v View) (workv1.BuildClass, bool) {
	can, healthy := map[workv1.BuildClass]bool{}, map[workv1.BuildClass]bool{}
	localMax := 0
	for _, bl := range routes {
		if !bl.Can(b.GetSystem(), b.GetRequiredSystemFeatures()) {
			continue
		}
		can[bl.Class] = true
		if bl.Class != workv1.BuildClass_BUILD_CLASS_REMOTE || v.Healthy == nil || v.Healthy(bl.Name) {
			healthy[bl.Class] = true
		}
		if bl.Class == workv1.BuildClass_BUILD_CLASS_LOCAL {
			localMax += max(bl.MaxJobs, 1)
		}
	}
	if len(can) == 0 {
		return 0, false
	}
	const (
		local  = workv1.BuildClass_BUILD_CLASS_LOCAL
		fod    = workv1.BuildClass_BUILD_CLASS_FOD
		remote = workv1.BuildClass_BUILD_CLASS_REMOTE
	)
	var order []workv1.BuildClass
	switch {
	case b.GetFixedOutput():
		order = []workv1.BuildClass{fod, local, remote}
	case b.GetPreferLocalBuild():
		order = []workv1.BuildClass{local, remote, fod}
	default:
		busy := 0
		if v.LocalBusy != nil {
			busy = v.LocalBusy(b.GetSystem())
		}
		if healthy[local] && busy < localMax {
			order = []workv1.BuildClass{local}
		}
		order = append(order, remote, local, fod)
	}
	for _, c := range order {
		if healthy[c] {
			return c, true
		}
	}
	return remote, true // only unhealthy remote builders can: wait in their queue
}

// Run routes until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	js := cfg.Events.JetStream()
	busy := &localLoad{js: js, every: time.Second, seen: map[string]loadSample{}}
	view := View{LocalBusy: func(system string) int { return busy.get(ctx, system) }}
	if cfg.Health != nil {
		view.Healthy = cfg.Health.Healthy
		cfg.Health.CheckNow(ctx) // know before the first decision
	}
	// route decides one buildable event: the build request to queue, or
	// none (an unsatisfiable derivation is recorded as interrupted here).
	route := func(ctx context.Context, m jetstream.Msg) (*eventlog.Work, error) {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return nil, worker.Permanent(err)
		}
		b := rec.Event.GetDrvBuildable()
		if b == nil {
			return nil, nil
		}
		class, ok := Route(cfg.Routes, b, view)
		if !ok {
			ev := &eventsv1.Event{
				Id: eventlog.UnsatisfiableID(rec.ID, b.GetAttempt()), CausationId: rec.Event.GetId(),
				Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
					Kind: eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE, Attempt: 0,
					Detail: fmt.Sprintf("no builder serves system %q with features %v", b.GetSystem(), b.GetRequiredSystemFeatures()),
				}},
			}
			cfg.Logger.Warn().Str("drv", rec.ID).Str("drv_path", b.GetDrvPath()).Str("system", b.GetSystem()).Msg("no builder can take this derivation")
			if _, err := cfg.Events.Append(ctx, rec.ID, ev, eventlog.ExpectLast(rec.Seq)); err != nil && !isConflict(err) {
				return nil, err
			}
			return nil, nil
		}
		req := &workv1.BuildRequest{
			DrvId: rec.ID, DrvPath: b.GetDrvPath(), System: b.GetSystem(), Class: class,
			Attempt: b.GetAttempt(), RequiredSystemFeatures: b.GetRequiredSystemFeatures(), LastSeq: rec.Seq,
		}
		return &eventlog.Work{Subject: eventlog.BuildSubject(b.GetSystem(), class), MsgID: eventlog.BuildRequestID(rec.ID, b.GetAttempt()), Message: req}, nil
	}
	// A batch's requests are queued pipelined: one round trip for all.
	handle := func(ctx context.Context, msgs []jetstream.Msg) []error {
		errs := make([]error, len(msgs))
		var work []eventlog.Work
		var of []int // work[j] is for msgs[of[j]]
		for i, m := range msgs {
			w, err := route(ctx, m)
			if w != nil {
				work, of = append(work, *w), append(of, i)
			}
			errs[i] = err
		}
		if len(work) == 0 {
			return errs
		}
		werrs, err := eventlog.PublishMany(ctx, js, work)
		for j, i := range of {
			errs[i] = werrs[j]
			if err != nil && werrs[j] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	// giveUp records a buildable derivation whose request could not be
	// queued as interrupted by the infrastructure, unless something else
	// happened to it meanwhile (its request did land and a builder took it).
	giveUp := func(ctx context.Context, m jetstream.Msg, cause error) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return fmt.Errorf("no derivation to interrupt: %w", err)
		}
		b := rec.Event.GetDrvBuildable()
		if b == nil {
			return nil
		}
		ev := &eventsv1.Event{
			Id: eventlog.RouteFailedID(rec.ID, b.GetAttempt()), CausationId: rec.Event.GetId(),
			Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
				Kind: eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE, Attempt: 0,
				Detail: text.Bound(fmt.Sprintf("the router could not queue its build request: %v", cause), maxDetailBytes),
			}},
		}
		cfg.Logger.Error().Err(cause).Str("drv", rec.ID).Str("drv_path", b.GetDrvPath()).Msg("recording a derivation the router gave up on as interrupted")
		if _, err := cfg.Events.Append(ctx, rec.ID, ev, eventlog.ExpectLast(rec.Seq)); err != nil && !isConflict(err) {
			return err
		}
		return nil
	}
	return worker.RunBatch(ctx, js, worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.RouterDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Drv, string(buildstate.KindBuildable))},
		Backoff: cfg.Backoff, MaxDeliver: cfg.MaxDeliver,
		GiveUp: giveUp, GaveUp: cfg.Metrics.CountGiveUp,
	}, handle, cfg.Logger)
}

func isConflict(err error) bool { return errors.Is(err, eventlog.ErrConflict) }

// localLoad reads how busy each system's local pool is from its durable
// consumer (waiting + unacknowledged), at most once per interval.
type localLoad struct {
	js    jetstream.JetStream
	every time.Duration
	mu    sync.Mutex
	seen  map[string]loadSample
}

type loadSample struct {
	n  int
	at time.Time
}

func (l *localLoad) get(ctx context.Context, system string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.seen[system]; ok && time.Since(s.at) < l.every {
		return s.n
	}
	n := 0
	name := eventlog.BuilderDurable(system, workv1.BuildClass_BUILD_CLASS_LOCAL)
	if c, err := l.js.Consumer(ctx, eventlog.WorkStream, name); err == nil {
		if info, err := c.Info(ctx); err == nil {
			n = int(info.NumPending) + info.NumAckPending
		}
	}
	l.seen[system] = loadSample{n: n, at: time.Now()}
	return n
}
