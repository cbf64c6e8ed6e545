package buildstate

import (
	"fmt"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// State is a derivation's build state.
type State uint8

// The states of the diagram in doc.go. None is a derivation not yet
// discovered; Succeeded and Failed are the two Completed states.
const (
	None State = iota
	Queued
	Buildable
	Building
	Succeeded
	Failed
	FailedRetry
	TransitiveFailure
	Blocked
	Interrupted
)

var stateNames = [...]string{"none", "queued", "buildable", "building", "succeeded", "failed", "failed-retry", "transitive-failure", "blocked", "interrupted"}

// AllStates lists every state, None included, for exhaustive tests.
var AllStates = []State{None, Queued, Buildable, Building, Succeeded, Failed, FailedRetry, TransitiveFailure, Blocked, Interrupted}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// ParseState is the inverse of String.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if n == name {
			return State(i), nil
		}
	}
	return None, fmt.Errorf("unknown build state %q", name)
}

// Completed reports whether s is final: a completed derivation never
// changes state again.
func (s State) Completed() bool { return s == Succeeded || s == Failed }

// Settled reports whether s needs nothing more from the scheduler: a jobset
// concludes when all its attributes' derivations are settled. TransitiveFailure,
// Blocked and Interrupted are settled but may be re-queued later when their
// cause is cleared or a person asks for a rebuild.
func (s State) Settled() bool {
	switch s {
	case Succeeded, Failed, TransitiveFailure, Blocked, Interrupted:
		return true
	}
	return false
}

// NeededAgain reports whether s is settled only for the jobsets that saw
// it so: an Interrupted derivation (unsatisfiable, process death,
// cancelled, infrastructure, timeout) or one Blocked behind it is queued
// again (drv_requeued, reason "needed-again") when a later jobset lists it
// or something that depends on it. Ingress appends that requeue after the
// jobset_evaluated (or jobset_attrs_listed part) that needs it, so a read
// model folding that jobset fact sees the derivation still in s, and its
// next fact is the requeue. Failed and TransitiveFailure stay: a failed
// build is cached until retried on purpose.
func (s State) NeededAgain() bool { return s == Interrupted || s == Blocked }

// IsFailure reports whether s counts as a failure for a conclusion.
func (s State) IsFailure() bool {
	switch s {
	case Failed, TransitiveFailure, Blocked, Interrupted:
		return true
	}
	return false
}

// Drv is the folded state of one derivation aggregate.
type Drv struct {
	State State
	// Attempt is the number of the last attempt made ready or started;
	// 0 before the first one.
	Attempt uint32
	// RetryUsed is set once the one automatic retry has been spent.
	RetryUsed bool
	// Interruption is the kind of the last interruption, if State is
	// Interrupted or the retry was caused by one.
	Interruption eventsv1.InterruptKind
	// Cause is the id of the dependency that failed or was interrupted,
	// for TransitiveFailure and Blocked.
	Cause string
	// Cached is set when it succeeded without a build.
	Cached bool
	// Events counts the facts folded so far.
	Events int
}
