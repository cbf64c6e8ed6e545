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
	// ErrBatched means a message is a batched fact (drv_downstream_failed),
	// which stands for a transition of each derivation it lists: decode
	// it with DecodeFacts and fold each of its Transitions.
	ErrBatched = errors.New("a batched fact: decode it with DecodeFacts and fold each of its Transitions")
	// ErrAckTimeout means pipelined appends were not all acknowledged
	// within the ack timeout: whether they landed is unknown, and
	// appending them again is safe (ids and guards make it a no-op).
	ErrAckTimeout = errors.New("no acknowledgement within the ack timeout")
)
