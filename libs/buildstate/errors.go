package buildstate

import "errors"

var (
	// ErrIllegal is returned by Next when a fact may not follow the current
	// state. Callers must not append the fact.
	ErrIllegal = errors.New("illegal transition")
	// ErrNotDrvEvent is returned for an event whose payload is not a
	// derivation fact.
	ErrNotDrvEvent = errors.New("not a derivation event")
	// ErrDepsUnfinished is returned by DecideBuildable while a dependency
	// has not succeeded.
	ErrDepsUnfinished = errors.New("dependencies not all succeeded")
	// ErrRetryUsed is returned when a second automatic retry is asked for.
	ErrRetryUsed = errors.New("automatic retry already used")
	// ErrNotRetryable is returned by DecideRetry for a derivation that is
	// neither failed nor interrupted.
	ErrNotRetryable = errors.New("only a failed or interrupted derivation can be retried")
)
