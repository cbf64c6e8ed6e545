package projection

import "errors"

var (
	// ErrLocked means another process holds the read model's file.
	ErrLocked = errors.New("read model is locked by another process")
)
