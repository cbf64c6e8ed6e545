package checkrun

import (
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// GitHub's check-run conclusions ekaci uses.
const (
	Success   = "success"
	Failure   = "failure"
	Neutral   = "neutral"
	Cancelled = "cancelled"
	TimedOut  = "timed_out"
)

// Result states a concluded jobset's attributes can have (the recorder's
// buildstate names and its own two).
const (
	stateSucceeded  = "succeeded"
	stateFailed     = "failed"
	stateTransitive = "transitive-failure"
	stateBlocked    = "blocked"
	stateInterrupt  = "interrupted"
	stateEvalError  = "eval-error"
	stateRemoved    = "removed"
)

// GateConclusion maps a jobset's (or change's) conclusion to a check run's.
func GateConclusion(c eventsv1.Conclusion) string {
	switch c {
	case eventsv1.Conclusion_CONCLUSION_SUCCESS:
		return Success
	case eventsv1.Conclusion_CONCLUSION_NEUTRAL:
		return Neutral
	case eventsv1.Conclusion_CONCLUSION_CANCELLED:
		return Cancelled
	}
	return Failure
}

// AttrConclusion maps an attribute's final state to its check run's
// conclusion: failures (a build failure, a transitive failure, out of
// memory, a process death, unsatisfiable, an evaluation error) are
// failure; a timeout timed_out; a cancellation cancelled; an
// interruption of ekaci's own machinery, or a derivation blocked behind
// one, neutral, since it is not the pull request's doing.
func AttrConclusion(r *eventsv1.AttrResult) string {
	switch r.GetState() {
	case stateSucceeded, stateRemoved:
		return Success
	case stateBlocked:
		return Neutral
	case stateInterrupt:
		switch r.GetInterruption() {
		case eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT:
			return TimedOut
		case eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED:
			return Cancelled
		case eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE:
			return Neutral
		}
	}
	return Failure
}

// notTheirFault reports whether a failed result is ekaci's machinery's
// doing rather than the pull request's.
func notTheirFault(r *eventsv1.AttrResult) bool {
	return r.GetState() == stateBlocked ||
		r.GetState() == stateInterrupt && r.GetInterruption() == eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE
}

// failed reports whether a result counts as a failure (anything but a
// success or a removal).
func failed(r *eventsv1.AttrResult) bool {
	return r.GetState() != stateSucceeded && r.GetState() != stateRemoved
}

// decides reports whether a result decides the verdict: new or changed
// (or any, without a base).
func decides(r *eventsv1.AttrResult) bool {
	return r.GetDifference() != eventsv1.Difference_DIFFERENCE_UNCHANGED && r.GetDifference() != eventsv1.Difference_DIFFERENCE_REMOVED
}
