package buildstate

import (
	"fmt"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Kind names a derivation fact by its subject token, e.g. "build_started".
type Kind string

// The derivation facts, by subject token.
const (
	KindDiscovered       Kind = "discovered"
	KindBuildable        Kind = "buildable"
	KindBuildStarted     Kind = "build_started"
	KindBuildSucceeded   Kind = "build_succeeded"
	KindBuildFailedRetry Kind = "build_failed_retry"
	KindBuildFailed      Kind = "build_failed"
	KindDependencyFailed Kind = "dependency_failed"
	KindBlocked          Kind = "blocked"
	KindInterrupted      Kind = "interrupted"
	KindRequeued         Kind = "requeued"
	// KindDownstreamFailed is a fact on a failed derivation that fails
	// many derivations downstream of it at once (see Downstream); the
	// failed derivation's own state does not change.
	KindDownstreamFailed Kind = "downstream_failed"
)

// AllKinds lists every derivation fact, for exhaustive tests.
var AllKinds = []Kind{KindDiscovered, KindBuildable, KindBuildStarted, KindBuildSucceeded, KindBuildFailedRetry, KindBuildFailed, KindDependencyFailed, KindBlocked, KindInterrupted, KindRequeued, KindDownstreamFailed}

// KindOf returns the fact kind of a derivation event.
func KindOf(ev *eventsv1.Event) (Kind, error) {
	switch ev.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		return KindDiscovered, nil
	case *eventsv1.Event_DrvBuildable:
		return KindBuildable, nil
	case *eventsv1.Event_DrvBuildStarted:
		return KindBuildStarted, nil
	case *eventsv1.Event_DrvBuildSucceeded:
		return KindBuildSucceeded, nil
	case *eventsv1.Event_DrvBuildFailedRetry:
		return KindBuildFailedRetry, nil
	case *eventsv1.Event_DrvBuildFailed:
		return KindBuildFailed, nil
	case *eventsv1.Event_DrvDependencyFailed:
		return KindDependencyFailed, nil
	case *eventsv1.Event_DrvBlocked:
		return KindBlocked, nil
	case *eventsv1.Event_DrvInterrupted:
		return KindInterrupted, nil
	case *eventsv1.Event_DrvRequeued:
		return KindRequeued, nil
	case *eventsv1.Event_DrvDownstreamFailed:
		return KindDownstreamFailed, nil
	}
	return "", fmt.Errorf("%w: %T", ErrNotDrvEvent, ev.GetPayload())
}

// from lists, for each fact, the states it may follow.
var from = map[Kind][]State{
	KindDiscovered:       {None},
	KindBuildable:        {Queued},
	KindBuildStarted:     {Buildable},
	KindBuildSucceeded:   {Building, Queued, Buildable}, // the last two only when cached
	KindBuildFailedRetry: {Building},
	KindBuildFailed:      {Building},
	KindDependencyFailed: {Queued, TransitiveFailure, Blocked},
	KindBlocked:          {Queued},
	KindInterrupted:      {Queued, Buildable, Building},
	KindRequeued:         {FailedRetry, TransitiveFailure, Blocked, Interrupted, Failed}, // Failed only when retried on purpose
	KindDownstreamFailed: {Failed},
}

// Allowed reports whether kind may follow state s, ignoring payload
// details (attempt numbers, the cached flag, the retry budget).
func Allowed(s State, kind Kind) bool {
	for _, f := range from[kind] {
		if f == s {
			return true
		}
	}
	return false
}

// Next folds one fact into cur, or refuses it with ErrIllegal when it may
// not follow cur. It is both the decider's check and the projections' fold.
func Next(cur Drv, ev *eventsv1.Event) (Drv, error) {
	kind, err := KindOf(ev)
	if err != nil {
		return cur, err
	}
	if !Allowed(cur.State, kind) {
		return cur, fmt.Errorf("%w: %s after %s", ErrIllegal, kind, cur.State)
	}
	next := cur
	next.Events++
	switch p := ev.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		next.State = Queued
	case *eventsv1.Event_DrvBuildable:
		if want := cur.Attempt + 1; p.DrvBuildable.GetAttempt() != want {
			return cur, fmt.Errorf("%w: buildable for attempt %d, want attempt %d", ErrIllegal, p.DrvBuildable.GetAttempt(), want)
		}
		next.State = Buildable
		next.Attempt = p.DrvBuildable.GetAttempt()
	case *eventsv1.Event_DrvBuildStarted:
		if p.DrvBuildStarted.GetAttempt() != cur.Attempt {
			return cur, fmt.Errorf("%w: started attempt %d, buildable for attempt %d", ErrIllegal, p.DrvBuildStarted.GetAttempt(), cur.Attempt)
		}
		next.State = Building
	case *eventsv1.Event_DrvBuildSucceeded:
		if cur.State != Building && !p.DrvBuildSucceeded.GetCached() {
			return cur, fmt.Errorf("%w: uncached success while %s", ErrIllegal, cur.State)
		}
		next.State = Succeeded
		next.Cached = p.DrvBuildSucceeded.GetCached()
		next.Cause = ""
	case *eventsv1.Event_DrvBuildFailedRetry:
		// An interruption of ekaci's own making is not the derivation's
		// fault: it is re-queued without using up the retry (the recorder
		// bounds how often in a row).
		infra := KeepsRetry(p.DrvBuildFailedRetry.GetInterruption())
		if cur.RetryUsed && !infra {
			return cur, fmt.Errorf("%w: %w", ErrIllegal, ErrRetryUsed)
		}
		next.State = FailedRetry
		next.RetryUsed = cur.RetryUsed || !infra
		next.Interruption = p.DrvBuildFailedRetry.GetInterruption()
	case *eventsv1.Event_DrvBuildFailed:
		next.State = Failed
	case *eventsv1.Event_DrvDependencyFailed:
		next.State = TransitiveFailure
		next.Cause = p.DrvDependencyFailed.GetCauseDrvId()
	case *eventsv1.Event_DrvBlocked:
		next.State = Blocked
		next.Cause = p.DrvBlocked.GetCauseDrvId()
	case *eventsv1.Event_DrvInterrupted:
		next.State = Interrupted
		next.Interruption = p.DrvInterrupted.GetKind()
	case *eventsv1.Event_DrvRequeued:
		retried := p.DrvRequeued.GetReason() == ReasonRetried
		if cur.State == Failed && !retried {
			// A failed build stays cached until someone asks for it again.
			return cur, fmt.Errorf("%w: requeued (%s) after failed: only a retry someone asked for", ErrIllegal, p.DrvRequeued.GetReason())
		}
		next.State = Queued
		next.Cause = ""
		if retried {
			// Asked for on purpose: the derivation gets its one automatic
			// retry again, as a new build would.
			next.RetryUsed = false
		}
	}
	return next, nil
}

// ReasonRetried is the drv_requeued reason of a retry someone asked for
// (DrvRequeued.actor says who): the only requeue allowed after Failed.
const ReasonRetried = "retried"

// DecideRetry returns the requeue of a failed or interrupted derivation
// that actor asked to build again, or an error saying why it may not be:
// a transitive failure or a block is retried through its cause, and
// anything not settled is still on its way.
func DecideRetry(cur Drv, actor *eventsv1.Actor) (*eventsv1.DrvRequeued, error) {
	switch cur.State {
	case Failed, Interrupted:
	case TransitiveFailure, Blocked:
		return nil, fmt.Errorf("%w: %s: retry its cause %s, which it follows", ErrNotRetryable, cur.State, cur.Cause)
	default:
		return nil, fmt.Errorf("%w: %s", ErrNotRetryable, cur.State)
	}
	return &eventsv1.DrvRequeued{Reason: ReasonRetried, NextAttempt: cur.Attempt + 1, Actor: actor}, nil
}

// KeepsRetry reports whether an attempt interrupted this way is re-queued
// without using up the derivation's one retry: ekaci's own machinery
// failed (INFRASTRUCTURE), or the builder process holding the attempt died
// or was stopped (PROCESS_DEATH: a deploy, a SIGKILL, a lost machine).
// Neither says anything about the derivation; two of them landing on one
// derivation must not make it final. The recorder bounds such re-queues in
// a row, since a derivation can also kill the process that builds it.
func KeepsRetry(k eventsv1.InterruptKind) bool {
	return k == eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE || k == eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH
}

// Fold replays a derivation's history from None.
func Fold(history []*eventsv1.Event) (Drv, error) {
	var d Drv
	for i, ev := range history {
		var err error
		if d, err = Next(d, ev); err != nil {
			return d, fmt.Errorf("event %d (%s): %w", i, ev.GetId(), err)
		}
	}
	return d, nil
}

// DecideBuildable returns the fact that makes cur Buildable, or an error
// when it may not be: it is not Queued, or unfinished dependencies remain.
// It is the only way to the Buildable state, which is how the machine keeps
// its promise that a Buildable derivation's dependencies all succeeded.
func DecideBuildable(cur Drv, unfinishedDeps int, info *eventsv1.DrvDiscovered) (*eventsv1.DrvBuildable, error) {
	if cur.State != Queued {
		return nil, fmt.Errorf("%w: buildable after %s", ErrIllegal, cur.State)
	}
	if unfinishedDeps > 0 {
		return nil, fmt.Errorf("%w: %d remain", ErrDepsUnfinished, unfinishedDeps)
	}
	return &eventsv1.DrvBuildable{
		DrvPath:                info.GetDrvPath(),
		System:                 info.GetSystem(),
		FixedOutput:            info.GetFixedOutput(),
		PreferLocalBuild:       info.GetPreferLocalBuild(),
		RequiredSystemFeatures: info.GetRequiredSystemFeatures(),
		Attempt:                cur.Attempt + 1,
	}, nil
}

// DecideFailure returns the fact for a failed or interrupted attempt: the
// first one is retried (FailedRetry), a later one is final (Failed, or
// Interrupted for interruptions). Cancellation and unsatisfiable builds are
// never retried: running them again cannot help.
func DecideFailure(cur Drv, attempt uint32, exitCode int32, tail string, interruption eventsv1.InterruptKind, durationMs int64) (*eventsv1.Event, error) {
	if cur.State != Building {
		return nil, fmt.Errorf("%w: failure reported while %s", ErrIllegal, cur.State)
	}
	if attempt != cur.Attempt {
		return nil, fmt.Errorf("%w: failure of attempt %d while attempt %d runs", ErrIllegal, attempt, cur.Attempt)
	}
	retryable := interruption != eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED &&
		interruption != eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE
	switch {
	case !cur.RetryUsed && retryable:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{
			Attempt: attempt, ExitCode: exitCode, LogTail: tail, Interruption: interruption, DurationMs: durationMs,
		}}}, nil
	case interruption != eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{
			Kind: interruption, Attempt: attempt, Detail: tail,
		}}}, nil
	default:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{
			Attempt: attempt, ExitCode: exitCode, LogTail: tail, DurationMs: durationMs,
		}}}, nil
	}
}
