package recorder

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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

// handle records a batch of reports. The common case — a success right
// after the start the builder recorded — needs no read: its appends, each
// guarded on that start, go out pipelined. Anything in between makes the
// guard fail, and the history decides (decide).
func (r *reports) handle(ctx context.Context, msgs []jetstream.Msg) []error {
	errs := make([]error, len(msgs))
	reps := make([]*workv1.BuildReport, len(msgs))
	var items []eventlog.Item
	var of []int // items[j] is for msgs[of[j]]
	for i, m := range msgs {
		rep := &workv1.BuildReport{}
		if err := eventlog.DecodeMessage(m.Data(), rep); err != nil {
			errs[i] = worker.Permanent(fmt.Errorf("decode report %s: %w", m.Subject(), err))
			continue
		}
		reps[i] = rep
		if item, ok := succeededAfterStart(rep); ok {
			items, of = append(items, item), append(of, i)
			continue
		}
		errs[i] = r.decide(ctx, rep)
	}
	if len(items) == 0 {
		return errs
	}
	_, aerrs, err := r.log.AppendMany(ctx, items)
	if err != nil {
		for _, i := range of {
			errs[i] = err // the worker retries them; the appends are idempotent
		}
		return errs
	}
	for j, i := range of {
		errs[i] = aerrs[j]
		if errors.Is(aerrs[j], eventlog.ErrConflict) {
			errs[i] = r.decide(ctx, reps[i])
		}
	}
	return errs
}

// succeededAfterStart is the append a success right after its recorded
// start needs: build_succeeded guarded on that start.
func succeededAfterStart(rep *workv1.BuildReport) (eventlog.Item, bool) {
	if rep.GetOutcome() != workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED || rep.GetStartedSeq() == 0 {
		return eventlog.Item{}, false
	}
	id := rep.GetDrvId()
	ev := &eventsv1.Event{Id: string(buildstate.KindBuildSucceeded) + "-" + id + "-" + strconv.FormatUint(uint64(rep.GetAttempt()), 10),
		Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{
			Attempt: rep.GetAttempt(), DurationMs: rep.GetDurationMs(),
		}}}
	return eventlog.Item{ID: id, Event: ev, Expect: true, ExpectSeq: rep.GetStartedSeq()}, true
}

// record decides the transition a report means and appends it.
func (r *reports) record(ctx context.Context, rep *workv1.BuildReport) error {
	if item, ok := succeededAfterStart(rep); ok {
		_, err := r.log.Append(ctx, item.ID, item.Event, eventlog.ExpectLast(item.ExpectSeq))
		if !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	return r.decide(ctx, rep)
}

// decide reads the derivation's history, decides the transition the report
// means and appends it. A report for an attempt that is no longer running
// (a duplicate, or one overtaken by a cancellation) is dropped.
func (r *reports) decide(ctx context.Context, rep *workv1.BuildReport) error {
	id := rep.GetDrvId()
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
