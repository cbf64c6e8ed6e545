// Package router is the scheduler's second and third tiers: it takes each
// Buildable derivation, picks the pool that must build it — the FOD pool for
// fixed-output derivations, the local builder for preferLocalBuild, else the
// remote pool or local — and queues a build request on
// ekaci.work.build.<system>.<class>. A derivation no configured builder can
// take (its system or required features unmet) is recorded as Interrupted
// (unsatisfiable) instead of waiting forever.
package router

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// Builder is a pool the router may send work to.
type Builder struct {
	Name     string
	Class    workv1.BuildClass
	Systems  []string
	Features []string
	MaxJobs  int
}

// Config wires the stage.
type Config struct {
	Log      *eventlog.Log
	Logger   zerolog.Logger
	Builders []Builder
}

// BuildSubject is where requests for a system and class are queued.
func BuildSubject(system string, c workv1.BuildClass) string { return eventlog.BuildSubject(system, c) }

// Route picks the class for a buildable derivation; ok is false when no
// builder can take it.
func Route(builders []Builder, b *eventsv1.DrvBuildable) (workv1.BuildClass, bool) {
	can := map[workv1.BuildClass]bool{}
	for _, bl := range builders {
		if !slices.Contains(bl.Systems, b.GetSystem()) && !(b.GetSystem() == "builtin") {
			continue
		}
		ok := true
		for _, f := range b.GetRequiredSystemFeatures() {
			if !slices.Contains(bl.Features, f) {
				ok = false
				break
			}
		}
		if ok {
			can[bl.Class] = true
		}
	}
	if len(can) == 0 {
		return 0, false
	}
	var order []workv1.BuildClass
	switch {
	case b.GetFixedOutput():
		order = []workv1.BuildClass{workv1.BuildClass_BUILD_CLASS_FOD, workv1.BuildClass_BUILD_CLASS_LOCAL, workv1.BuildClass_BUILD_CLASS_REMOTE}
	case b.GetPreferLocalBuild():
		order = []workv1.BuildClass{workv1.BuildClass_BUILD_CLASS_LOCAL, workv1.BuildClass_BUILD_CLASS_REMOTE, workv1.BuildClass_BUILD_CLASS_FOD}
	default:
		order = []workv1.BuildClass{workv1.BuildClass_BUILD_CLASS_REMOTE, workv1.BuildClass_BUILD_CLASS_LOCAL, workv1.BuildClass_BUILD_CLASS_FOD}
	}
	for _, c := range order {
		if can[c] {
			return c, true
		}
	}
	return 0, false
}

// Run routes until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	js := cfg.Log.JetStream()
	handle := func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		b := rec.Event.GetDrvBuildable()
		if b == nil {
			return nil
		}
		class, ok := Route(cfg.Builders, b)
		if !ok {
			ev := &eventsv1.Event{
				Id: fmt.Sprintf("unsatisfiable-%s-%d", rec.ID, b.GetAttempt()), CausationId: rec.Event.GetId(),
				Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
					Kind: eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE, Attempt: 0,
					Detail: fmt.Sprintf("no builder serves system %q with features %v", b.GetSystem(), b.GetRequiredSystemFeatures()),
				}},
			}
			cfg.Logger.Warn().Str("drv", b.GetDrvPath()).Str("system", b.GetSystem()).Msg("no builder can take this derivation")
			if _, err := cfg.Log.Append(ctx, rec.ID, ev, eventlog.ExpectLast(rec.Seq)); err != nil && !isConflict(err) {
				return err
			}
			return nil
		}
		req := &workv1.BuildRequest{
			DrvId: rec.ID, DrvPath: b.GetDrvPath(), System: b.GetSystem(), Class: class,
			Attempt: b.GetAttempt(), RequiredSystemFeatures: b.GetRequiredSystemFeatures(),
		}
		_, err = eventlog.Publish(ctx, js, BuildSubject(b.GetSystem(), class), fmt.Sprintf("build-%s-%d", rec.ID, b.GetAttempt()), req)
		return err
	}
	return worker.Run(ctx, js, worker.Config{
		Stream: eventlog.EventsStream, Durable: "router",
		Filters: []string{eventlog.FactFilter(eventlog.Drv, string(buildstate.KindBuildable))}, Concurrency: 4,
	}, handle, cfg.Logger)
}

func isConflict(err error) bool { return errors.Is(err, eventlog.ErrConflict) }
