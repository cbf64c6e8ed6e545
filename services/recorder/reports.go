package recorder

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// ReportsSubject is where builders publish their reports.
const ReportsSubject = eventlog.ReportsFilter

type reports struct {
	log    *eventlog.Log
	logger zerolog.Logger
}

func (r *reports) handle(ctx context.Context, m jetstream.Msg) error {
	rep := &workv1.BuildReport{}
	if err := eventlog.DecodeMessage(m.Data(), rep); err != nil {
		return worker.Permanent(fmt.Errorf("decode report %s: %w", m.Subject(), err))
	}
	return r.record(ctx, rep)
}

// record decides the transition a report means and appends it. A report
// for an attempt that is no longer running (a duplicate, or one overtaken
// by a cancellation) is dropped.
func (r *reports) record(ctx context.Context, rep *workv1.BuildReport) error {
	id := rep.GetDrvId()
	if rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED && rep.GetStartedSeq() != 0 {
		// The common case needs no read: a success right after the start
		// the builder recorded. Anything in between makes the guard fail,
		// and the history decides below.
		ev := &eventsv1.Event{Id: fmt.Sprintf("%s-%s-%d", buildstate.KindBuildSucceeded, id, rep.GetAttempt()),
			Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{
				Attempt: rep.GetAttempt(), DurationMs: rep.GetDurationMs(),
			}}}
		_, err := r.log.Append(ctx, id, ev, eventlog.ExpectLast(rep.GetStartedSeq()))
		if !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	history, last, err := r.log.Load(ctx, eventlog.Drv, id)
	if err != nil {
		return err
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, h := range history {
		evs[i] = h.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil {
		return fmt.Errorf("fold %s: %w", id, err)
	}
	if cur.State == buildstate.FailedRetry && cur.Attempt == rep.GetAttempt() {
		// The failure was recorded but the re-queue was not (a crash in
		// between): finish the job.
		return r.requeue(ctx, id, rep.GetAttempt(), fmt.Sprintf("%s-%s-%d", buildstate.KindBuildFailedRetry, id, rep.GetAttempt()), last)
	}
	if cur.State != buildstate.Building || cur.Attempt != rep.GetAttempt() {
		r.logger.Info().Str("drv", id).Uint32("attempt", rep.GetAttempt()).Stringer("state", cur.State).Msg("stale build report dropped")
		return nil
	}
	var ev *eventsv1.Event
	switch rep.GetOutcome() {
	case workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED:
		ev = &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{
			Attempt: rep.GetAttempt(), DurationMs: rep.GetDurationMs(),
		}}}
	case workv1.BuildOutcome_BUILD_OUTCOME_FAILED, workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED:
		ev, err = buildstate.DecideFailure(cur, rep.GetAttempt(), rep.GetExitCode(), rep.GetLogTail(), rep.GetInterruption(), rep.GetDurationMs())
		if err != nil {
			return worker.Permanent(err)
		}
	default:
		return worker.Permanent(fmt.Errorf("report for %s has no outcome", id))
	}
	kind, _ := buildstate.KindOf(ev)
	ev.Id = fmt.Sprintf("%s-%s-%d", kind, id, rep.GetAttempt())
	a, err := r.log.Append(ctx, id, ev, eventlog.ExpectLast(last))
	if err != nil {
		return err // a conflict is retried: the worker redelivers and we re-read
	}
	if kind != buildstate.KindBuildFailedRetry {
		return nil
	}
	return r.requeue(ctx, id, rep.GetAttempt(), ev.Id, a.Seq)
}

func (r *reports) requeue(ctx context.Context, id string, attempt uint32, cause string, last uint64) error {
	ev := &eventsv1.Event{
		Id:          fmt.Sprintf("retry-%s-%d", id, attempt+1),
		CausationId: cause,
		Payload:     &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "retry", NextAttempt: attempt + 1}},
	}
	if _, err := r.log.Append(ctx, id, ev, eventlog.ExpectLast(last)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
		return err
	}
	return nil
}
