package eventlog

import "errors"

var (
	// ErrConflict means the aggregate changed since the writer read it:
	// re-read and re-decide.
	ErrConflict = errors.New("aggregate changed since it was read")
	// ErrBadEvent means the event cannot be appended as given (no id, no
	// payload, an id that is not a subject token).
	ErrBadEvent = errors.New("bad event")
	// ErrNotEvent means a message on the log is not an ekaci event.
	ErrNotEvent = errors.New("not an ekaci event")
)
