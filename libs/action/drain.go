package action

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Builder is what a builder name's drain facts say: the one fold of them,
// used by the deciders here, the builders themselves and the admin read
// model.
type Builder struct {
	// Name is the builder's name.
	Name string
	// Drained is set by builder_drained, cleared by builder_resumed.
	Drained bool
	// Actor, At and Seq are the last drain's or resume's.
	Actor *eventsv1.Actor
	At    time.Time
	Seq   uint64
	// Facts counts the aggregate's facts.
	Facts int
}

// Apply folds one of the builder's facts.
func (b *Builder) Apply(rec eventlog.Record) {
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_BuilderDrained:
		b.Name, b.Drained, b.Actor = p.BuilderDrained.GetName(), true, p.BuilderDrained.GetActor()
	case *eventsv1.Event_BuilderResumed:
		b.Name, b.Drained, b.Actor = p.BuilderResumed.GetName(), false, p.BuilderResumed.GetActor()
	default:
		return
	}
	b.At, b.Seq = rec.Time, rec.Seq
	b.Facts++
}

// LoadBuilder folds a builder name's drain facts from the log; last is
// the aggregate's last sequence.
func LoadBuilder(ctx context.Context, log Log, name string) (b Builder, last uint64, err error) {
	recs, last, err := log.Load(ctx, eventlog.Builder, eventlog.BuilderID(name))
	if err != nil {
		return Builder{}, 0, fmt.Errorf("drains of builder %s: %w", name, err)
	}
	b.Name = name
	for _, r := range recs {
		b.Apply(r)
	}
	b.Facts = len(recs)
	return b, last, nil
}

func checkBuilderName(name string) error {
	if name == "" || len(name) > 128 || !utf8.ValidString(name) {
		return fmt.Errorf("%w: builder name %q: want 1 to 128 bytes of UTF-8", ErrInvalid, name)
	}
	return nil
}

// Drain stops every builder process of that name taking new work
// (builder_drained); the builds they run go on to their end. A drained
// builder answers Already.
func Drain(ctx context.Context, log Log, name string, actor *eventsv1.Actor) (Result, error) {
	return decideBuilder(ctx, log, name, actor, true)
}

// Resume lets a drained builder take work again (builder_resumed):
// ErrState when it is not drained.
func Resume(ctx context.Context, log Log, name string, actor *eventsv1.Actor) (Result, error) {
	return decideBuilder(ctx, log, name, actor, false)
}

func decideBuilder(ctx context.Context, log Log, name string, actor *eventsv1.Actor, drain bool) (Result, error) {
	verb := "drain"
	if !drain {
		verb = "resume"
	}
	if err := checkBuilderName(name); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	id := eventlog.BuilderID(name)
	for range attempts {
		b, last, err := LoadBuilder(ctx, log, name)
		if err != nil {
			return Result{}, fmt.Errorf("%s %s: %w", verb, name, err)
		}
		switch {
		case drain && b.Drained:
			return Result{Seq: b.Seq, Already: true}, nil
		case !drain && !b.Drained:
			return Result{}, fmt.Errorf("resume %s: %w: it is not drained", name, ErrState)
		}
		ev := &eventsv1.Event{Id: eventlog.BuilderDrainedID(id, b.Facts+1),
			Payload: &eventsv1.Event_BuilderDrained{BuilderDrained: &eventsv1.BuilderDrained{Name: name, Actor: actor}}}
		if !drain {
			ev = &eventsv1.Event{Id: eventlog.BuilderResumedID(id, b.Facts+1),
				Payload: &eventsv1.Event_BuilderResumed{BuilderResumed: &eventsv1.BuilderResumed{Name: name, Actor: actor}}}
		}
		a, err := log.Append(ctx, id, ev, eventlog.ExpectLast(last))
		switch {
		case errors.Is(err, eventlog.ErrConflict):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("%s %s: %w", verb, name, err)
		}
		return Result{Seq: a.Seq, Already: a.Duplicate}, nil
	}
	return Result{}, fmt.Errorf("%s %s: it changed under each of %d attempts", verb, name, attempts)
}
