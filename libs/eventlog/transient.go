package eventlog

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes that mean "not now" rather than "never".
var transientCodes = map[jetstream.ErrorCode]bool{
	10004: true, // incomplete results (cluster)
	10008: true, // JetStream system temporarily unavailable
	10023: true, // insufficient resources (the server's store is full)
	10047: true, // insufficient storage resources available
	10077: true, // store failed, e.g. a stream's byte budget is full
	10118: true, // stream is offline (recovering, leader moving)
	10163: true, // expected last sequence per subject temporarily unavailable
}

// Transient reports whether err is a NATS failure that may go away on its
// own — a disconnect, a timeout or lost acknowledgement, no responder
// while a leader moves, a full store an operator can free — so that the
// same append is worth retrying later. A conflict, a bad event or a
// closed connection is not transient. A deadline the caller set is no
// reason to retry: callers check their own context first.
func Transient(err error) bool {
	if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrBadEvent) {
		return false
	}
	for _, t := range []error{
		ErrAckTimeout,
		jetstream.ErrAsyncPublishTimeout,
		jetstream.ErrNoStreamResponse,
		jetstream.ErrTooManyStalledMsgs,
		nats.ErrDisconnected,
		nats.ErrConnectionReconnecting,
		nats.ErrReconnectBufExceeded,
		nats.ErrNoResponders,
		nats.ErrTimeout,
		context.DeadlineExceeded,
	} {
		if errors.Is(err, t) {
			return true
		}
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && transientCodes[apiErr.ErrorCode]
}
