package recorder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

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
		if err := eventlog.DecodeWork(m.Data(), rep); err != nil {
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
	ev := &eventsv1.Event{Id: eventlog.OutcomeID(string(buildstate.KindBuildSucceeded), id, rep.GetAttempt()),
		Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{
			Attempt: rep.GetAttempt(), DurationMs: rep.GetDurationMs(),
		}}}
	return eventlog.Item{ID: id, Event: ev, Expect: true, ExpectSeq: rep.GetStartedSeq()}, true
}

// MaxInfrastructureInterruptions bounds the attempts of one derivation
// that ekaci's own machinery may fail in a row (INTERRUPT_KIND_INFRASTRUCTURE:
// Nix could not be started, the store was unreachable, a .drv was gone;
// INTERRUPT_KIND_PROCESS_DEATH: the builder holding it died or stopped;
// see buildstate.KeepsRetry).
// Each of the first MaxInfrastructureInterruptions-1 is re-queued without
// using up the derivation's retry; the next one is recorded as interrupted
// (infrastructure), so that a machine that cannot build anything does not
// loop forever. An interrupted derivation is queued again when a later
// jobset needs it.
const MaxInfrastructureInterruptions = 3

// RetryReason is a drv_requeued's reason after a failed_retry.
const RetryReason = "retry"

// decide reads the derivation's history, decides the transition the report
// means and appends it. A report for an attempt that is no longer running
// (a duplicate, or one overtaken by a cancellation, or the second of a real
// outcome and a holder's reported death) is dropped: the first report
// recorded for an attempt wins.
func (r *reports) decide(ctx context.Context, rep *workv1.BuildReport) error {
	id := rep.GetDrvId()
	evs, cur, last, err := r.history(ctx, id)
	if err != nil {
		return err
	}
	if cur.State == buildstate.FailedRetry && cur.Attempt == rep.GetAttempt() {
		// The failure was recorded but the re-queue was not (a crash in
		// between): finish the job.
		return r.requeue(ctx, id, rep.GetAttempt(), eventlog.OutcomeID(string(buildstate.KindBuildFailedRetry), id, rep.GetAttempt()), last)
	}
	if cur.State != buildstate.Building || cur.Attempt != rep.GetAttempt() {
		r.logger.Info().Str("drv", id).Uint32("attempt", rep.GetAttempt()).Str("holder", rep.GetHolder()).
			Stringer("outcome", rep.GetOutcome()).Stringer("state", cur.State).Msg("stale build report dropped")
		return nil
	}
	var ev *eventsv1.Event
	switch {
	case rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED:
		ev = &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{
			Attempt: rep.GetAttempt(), DurationMs: rep.GetDurationMs(),
		}}}
	case rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_UNSPECIFIED:
		return worker.Permanent(fmt.Errorf("report for %s has no outcome", id))
	case buildstate.KeepsRetry(rep.GetInterruption()):
		// Whatever the outcome says: ekaci's machinery failed or the
		// builder holding the attempt died, and the derivation is not to
		// blame.
		ev = decideInfrastructure(rep, infrastructureStreak(evs))
	case rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_FAILED, rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED:
		ev, err = buildstate.DecideFailure(cur, rep.GetAttempt(), rep.GetExitCode(), rep.GetLogTail(), rep.GetInterruption(), rep.GetDurationMs())
		if err != nil {
			return worker.Permanent(err)
		}
	default:
		return worker.Permanent(fmt.Errorf("report for %s has outcome %v", id, rep.GetOutcome()))
	}
	kind, _ := buildstate.KindOf(ev)
	ev.Id = eventlog.OutcomeID(string(kind), id, rep.GetAttempt())
	a, err := r.log.Append(ctx, id, ev, eventlog.ExpectLast(last))
	if err != nil {
		return err // a conflict is retried: the worker redelivers and we re-read
	}
	if kind != buildstate.KindBuildFailedRetry {
		return nil
	}
	return r.requeue(ctx, id, rep.GetAttempt(), ev.Id, a.Seq)
}

// history loads and folds a derivation's history.
func (r *reports) history(ctx context.Context, id string) ([]*eventsv1.Event, buildstate.Drv, uint64, error) {
	history, last, err := r.log.Load(ctx, eventlog.Drv, id)
	if err != nil {
		return nil, buildstate.Drv{}, 0, err
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, h := range history {
		evs[i] = h.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil {
		return nil, buildstate.Drv{}, 0, fmt.Errorf("fold %s: %w", id, err)
	}
	return evs, cur, last, nil
}

// infrastructureStreak counts the infrastructure interruptions that
// ended the attempts right before the current one, in a row: from the end
// of the history back to the first fact that is not part of such a
// re-queue (a real failure's retry, an interruption, a re-queue for
// another reason).
func infrastructureStreak(history []*eventsv1.Event) int {
	n := 0
	for i := len(history) - 1; i >= 0; i-- {
		switch p := history[i].GetPayload().(type) {
		case *eventsv1.Event_DrvBuildable, *eventsv1.Event_DrvBuildStarted:
		case *eventsv1.Event_DrvRequeued:
			if p.DrvRequeued.GetReason() != RetryReason {
				return n
			}
		case *eventsv1.Event_DrvBuildFailedRetry:
			if !buildstate.KeepsRetry(p.DrvBuildFailedRetry.GetInterruption()) {
				return n
			}
			n++
		default:
			return n
		}
	}
	return n
}

// decideInfrastructure is the fact for an attempt ekaci's machinery
// failed, after streak such attempts in a row: a re-queue that keeps the
// retry, or, at the bound, an interruption.
func decideInfrastructure(rep *workv1.BuildReport, streak int) *eventsv1.Event {
	kind := rep.GetInterruption()
	if streak+1 >= MaxInfrastructureInterruptions {
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
			Kind: kind, Attempt: rep.GetAttempt(),
			Detail: boundText(fmt.Sprintf("ekaci could not build it %d times in a row: %s", streak+1, rep.GetLogTail())),
		}}}
	}
	return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{
		Attempt: rep.GetAttempt(), ExitCode: rep.GetExitCode(), LogTail: rep.GetLogTail(), Interruption: kind, DurationMs: rep.GetDurationMs(),
	}}}
}

// giveUp is the report worker's GiveUp: the recorder stops handling a
// report (refused as permanent, or failed on its last delivery), so it
// records a terminal fact for the attempt the report was about — an
// infrastructure interruption saying why — lest the derivation stay
// Building forever. Guarded on the history it read: an attempt that
// settled meanwhile is left alone.
func (r *reports) giveUp(ctx context.Context, m jetstream.Msg, cause error) error {
	rep := &workv1.BuildReport{}
	if err := eventlog.DecodeWork(m.Data(), rep); err != nil {
		// No attempt to name: the build that may wait on it is not known
		// for sure, and interrupting a healthy one would be worse.
		return fmt.Errorf("give up on %s: %w", m.Subject(), err)
	}
	return r.abandon(ctx, rep, cause)
}

// abandon records the end of the attempt rep was about, after cause.
func (r *reports) abandon(ctx context.Context, rep *workv1.BuildReport, cause error) error {
	id := rep.GetDrvId()
	if !eventlog.ValidToken(id) {
		return fmt.Errorf("give up on a report for %q: not a derivation id", id)
	}
	_, cur, last, err := r.history(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case cur.State == buildstate.FailedRetry && cur.Attempt == rep.GetAttempt():
		return r.requeue(ctx, id, rep.GetAttempt(), eventlog.OutcomeID(string(buildstate.KindBuildFailedRetry), id, rep.GetAttempt()), last)
	case cur.State != buildstate.Building || cur.Attempt != rep.GetAttempt():
		return nil // the attempt is over: nothing waits on this report
	}
	ev := &eventsv1.Event{
		Id: eventlog.OutcomeID(string(buildstate.KindInterrupted), id, rep.GetAttempt()),
		Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
			Kind: eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE, Attempt: rep.GetAttempt(),
			Detail: boundText("the recorder could not record its build report: " + cause.Error()),
		}},
	}
	_, err = r.log.Append(ctx, id, ev, eventlog.ExpectLast(last))
	if err != nil {
		return fmt.Errorf("interrupt %s after giving up on its report: %w", id, err)
	}
	r.logger.Warn().Str("drv", id).Uint32("attempt", rep.GetAttempt()).AnErr("cause", cause).Msg("gave up on a build report: recorded the attempt as interrupted (infrastructure)")
	return nil
}

// detailBudget bounds the bytes of a detail the recorder writes itself.
const detailBudget = 8 << 10

// boundText makes s valid UTF-8 of at most detailBudget bytes, keeping its
// end (where an error or a log says what went wrong last), cut at a rune
// boundary.
func boundText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= detailBudget {
		return s
	}
	cut := len(s) - detailBudget + len("…")
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return "…" + s[cut:]
}

func (r *reports) requeue(ctx context.Context, id string, attempt uint32, cause string, last uint64) error {
	ev := &eventsv1.Event{
		Id:          eventlog.RetryID(id, attempt+1),
		CausationId: cause,
		Payload:     &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: RetryReason, NextAttempt: attempt + 1}},
	}
	if _, err := r.log.Append(ctx, id, ev, eventlog.ExpectLast(last)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
		return err
	}
	return nil
}
