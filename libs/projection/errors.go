package projection

import "errors"

var (
	// ErrLocked means another process holds the read model's file.
	ErrLocked = errors.New("read model is locked by another process")
	// ErrAheadOfLog means a read model that cannot rebuild itself (not
	// Versioned) folded events the log does not have.
	ErrAheadOfLog = errors.New("read model is ahead of the event log")
)
