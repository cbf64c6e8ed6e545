package action

import (
	"context"
	"errors"
	"fmt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Log is what the deciders need of the event log (*eventlog.Log).
type Log interface {
	Load(ctx context.Context, aggregate, id string) ([]eventlog.Record, uint64, error)
	Append(ctx context.Context, id string, ev *eventsv1.Event, opts ...eventlog.AppendOption) (eventlog.Appended, error)
}

// Sources an Actor may name.
const (
	SourceAdmin  = "admin"
	SourceGitHub = "github"
	SourceCLI    = "cli"
)

// Result is what an action appended: the sequence of its (last) fact, so
// that a read can wait for a read model to pass it.
type Result struct {
	// Seq is the stream sequence of the action's last fact.
	Seq uint64
	// Already is set when the action had been taken before (this ask
	// changed nothing; Seq is then the earlier fact's).
	Already bool
}

// attempts bounds the re-reads after a guard conflict: each means another
// writer appended to the aggregate meanwhile.
const attempts = 8

// checkActor refuses an actor without a name or with an unknown source.
func checkActor(a *eventsv1.Actor) error {
	switch {
	case a.GetWho() == "":
		return fmt.Errorf("%w: actor: who is empty", ErrInvalid)
	case a.GetSource() != SourceAdmin && a.GetSource() != SourceGitHub && a.GetSource() != SourceCLI:
		return fmt.Errorf("%w: actor: source %q: want admin, github or cli", ErrInvalid, a.GetSource())
	}
	return nil
}

func checkID(kind, id string) error {
	if !eventlog.ValidToken(id) {
		return fmt.Errorf("%w: %s id %q", ErrInvalid, kind, id)
	}
	return nil
}

// Retry queues a failed or interrupted derivation again on actor's
// behalf (DecideRetry).
func Retry(ctx context.Context, log Log, drvID string, actor *eventsv1.Actor) (Result, error) {
	if err := checkID("derivation", drvID); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	for range attempts {
		recs, last, err := log.Load(ctx, eventlog.Drv, drvID)
		if err != nil {
			return Result{}, fmt.Errorf("retry %s: %w", drvID, err)
		}
		if len(recs) == 0 {
			return Result{}, fmt.Errorf("retry %s: derivation %w", drvID, ErrNotFound)
		}
		evs := make([]*eventsv1.Event, len(recs))
		for i, r := range recs {
			evs[i] = r.Event
		}
		cur, err := buildstate.Fold(evs)
		if err != nil {
			return Result{}, fmt.Errorf("retry %s: its history: %w", drvID, err)
		}
		req, err := buildstate.DecideRetry(cur, actor)
		if err != nil {
			return Result{}, fmt.Errorf("retry %s: %w: %w", drvID, ErrState, err)
		}
		ev := &eventsv1.Event{Id: eventlog.RetriedID(drvID, req.GetNextAttempt()),
			Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: req}}
		a, err := log.Append(ctx, drvID, ev, eventlog.ExpectLast(last))
		switch {
		case errors.Is(err, eventlog.ErrConflict):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("retry %s: %w", drvID, err)
		}
		return Result{Seq: a.Seq, Already: a.Duplicate}, nil
	}
	return Result{}, fmt.Errorf("retry %s: it changed under each of %d attempts", drvID, attempts)
}

// jobset is what a jobset's own history says.
type jobset struct {
	created   bool
	changeID  string
	concluded bool   // in the current round
	cancelled uint64 // sequence of the current round's jobset_cancelled
	round     uint32 // restarts so far
	last      uint64
}

func loadJobset(ctx context.Context, log Log, jobsetID string) (jobset, error) {
	recs, last, err := log.Load(ctx, eventlog.Jobset, jobsetID)
	if err != nil {
		return jobset{}, err
	}
	js := jobset{last: last}
	for _, r := range recs {
		switch p := r.Event.GetPayload().(type) {
		case *eventsv1.Event_JobsetCreated:
			js.created, js.changeID = true, p.JobsetCreated.GetChangeId()
		case *eventsv1.Event_JobsetConcluded:
			js.concluded = true
			if js.changeID == "" {
				js.changeID = p.JobsetConcluded.GetChangeId()
			}
		case *eventsv1.Event_JobsetCancelled:
			js.cancelled = r.Seq
			if js.changeID == "" {
				js.changeID = p.JobsetCancelled.GetChangeId()
			}
		case *eventsv1.Event_JobsetRestarted:
			js.round, js.concluded, js.cancelled = p.JobsetRestarted.GetRound(), false, 0
		}
	}
	return js, nil
}

// CancelJobset cancels a jobset not yet concluded on actor's behalf.
func CancelJobset(ctx context.Context, log Log, jobsetID string, actor *eventsv1.Actor) (Result, error) {
	if err := checkID("jobset", jobsetID); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	return cancelJobset(ctx, log, jobsetID, "", actor, false)
}

// cancelJobset appends jobset_cancelled. With planned set, the jobset may
// not exist yet (a job its change's configuration names): it is then
// cancelled before it is created, and a concluded one is left alone.
func cancelJobset(ctx context.Context, log Log, jobsetID, changeID string, actor *eventsv1.Actor, planned bool) (Result, error) {
	for range attempts {
		js, err := loadJobset(ctx, log, jobsetID)
		if err != nil {
			return Result{}, fmt.Errorf("cancel jobset %s: %w", jobsetID, err)
		}
		switch {
		case !js.created && js.last == 0 && !planned:
			return Result{}, fmt.Errorf("cancel jobset %s: jobset %w", jobsetID, ErrNotFound)
		case js.cancelled != 0:
			return Result{Seq: js.cancelled, Already: true}, nil
		case js.concluded && planned:
			return Result{Seq: js.last, Already: true}, nil
		case js.concluded:
			return Result{}, fmt.Errorf("cancel jobset %s: %w: it has concluded", jobsetID, ErrState)
		}
		if js.changeID == "" {
			js.changeID = changeID
		}
		ev := &eventsv1.Event{Id: eventlog.JobsetCancelledID(jobsetID, js.round), CorrelationId: js.changeID,
			Payload: &eventsv1.Event_JobsetCancelled{JobsetCancelled: &eventsv1.JobsetCancelled{ChangeId: js.changeID, Actor: actor}}}
		a, err := log.Append(ctx, jobsetID, ev, eventlog.ExpectLast(js.last))
		switch {
		case errors.Is(err, eventlog.ErrConflict):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("cancel jobset %s: %w", jobsetID, err)
		}
		return Result{Seq: a.Seq, Already: a.Duplicate}, nil
	}
	return Result{}, fmt.Errorf("cancel jobset %s: it changed under each of %d attempts", jobsetID, attempts)
}

// CancelChange cancels a change not yet concluded, then each of its
// jobsets (those its configuration names, created or not). Asked again,
// it finishes what an interrupted ask left undone.
func CancelChange(ctx context.Context, log Log, changeID string, actor *eventsv1.Actor) (Result, error) {
	if err := checkID("change", changeID); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	var res Result
	for i := 0; ; i++ {
		if i == attempts {
			return Result{}, fmt.Errorf("cancel change %s: it changed under each of %d attempts", changeID, attempts)
		}
		recs, last, err := log.Load(ctx, eventlog.Change, changeID)
		if err != nil {
			return Result{}, fmt.Errorf("cancel change %s: %w", changeID, err)
		}
		if len(recs) == 0 {
			return Result{}, fmt.Errorf("cancel change %s: change %w", changeID, ErrNotFound)
		}
		var cancelled, concluded uint64
		for _, r := range recs {
			switch r.Event.GetPayload().(type) {
			case *eventsv1.Event_ChangeCancelled:
				cancelled = r.Seq
			case *eventsv1.Event_ChangeConcluded:
				concluded = r.Seq
			}
		}
		if cancelled != 0 {
			res = Result{Seq: cancelled, Already: true}
			break
		}
		if concluded != 0 {
			return Result{}, fmt.Errorf("cancel change %s: %w: it has concluded", changeID, ErrState)
		}
		ev := &eventsv1.Event{Id: eventlog.ChangeCancelledID(changeID), CorrelationId: changeID,
			Payload: &eventsv1.Event_ChangeCancelled{ChangeCancelled: &eventsv1.ChangeCancelled{Actor: actor}}}
		a, err := log.Append(ctx, changeID, ev, eventlog.ExpectLast(last))
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("cancel change %s: %w", changeID, err)
		}
		res = Result{Seq: a.Seq, Already: a.Duplicate}
		break
	}
	// The jobsets its configuration names: the cancel landed after the
	// configuration or before it, and then no configuration lands (the
	// reader's guard on the change refuses it).
	recs, _, err := log.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return Result{}, fmt.Errorf("cancel change %s: %w", changeID, err)
	}
	for _, r := range recs {
		cr := r.Event.GetChangeConfigRead()
		if cr == nil {
			continue
		}
		for _, job := range cr.GetJobs() {
			jr, err := cancelJobset(ctx, log, eventlog.JobsetID(changeID, job), changeID, actor, true)
			if err != nil {
				return Result{}, fmt.Errorf("cancel change %s: %w", changeID, err)
			}
			res.Seq = max(res.Seq, jr.Seq)
		}
	}
	return res, nil
}

// Restart opens a concluded jobset again on actor's behalf: what it needs
// that failed or was interrupted is built again, and it concludes again.
func Restart(ctx context.Context, log Log, jobsetID string, actor *eventsv1.Actor) (Result, error) {
	if err := checkID("jobset", jobsetID); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	for range attempts {
		js, err := loadJobset(ctx, log, jobsetID)
		if err != nil {
			return Result{}, fmt.Errorf("restart jobset %s: %w", jobsetID, err)
		}
		switch {
		case !js.created:
			return Result{}, fmt.Errorf("restart jobset %s: jobset %w", jobsetID, ErrNotFound)
		case !js.concluded:
			return Result{}, fmt.Errorf("restart jobset %s: %w: it has not concluded (cancel it, or retry a derivation)", jobsetID, ErrState)
		}
		round := js.round + 1
		ev := &eventsv1.Event{Id: eventlog.RestartedID(jobsetID, round), CorrelationId: js.changeID,
			Payload: &eventsv1.Event_JobsetRestarted{JobsetRestarted: &eventsv1.JobsetRestarted{ChangeId: js.changeID, Actor: actor, Round: round}}}
		a, err := log.Append(ctx, jobsetID, ev, eventlog.ExpectLast(js.last))
		switch {
		case errors.Is(err, eventlog.ErrConflict):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("restart jobset %s: %w", jobsetID, err)
		}
		return Result{Seq: a.Seq, Already: a.Duplicate}, nil
	}
	return Result{}, fmt.Errorf("restart jobset %s: it changed under each of %d attempts", jobsetID, attempts)
}
