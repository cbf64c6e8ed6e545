package admin

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
)

// statusOf maps an error to the status a client gets: NotFound,
// InvalidArgument (with the field), FailedPrecondition (wrong state for
// the action), Unavailable (NATS or the read model not answering),
// Internal otherwise.
func statusOf(err error, field string) error {
	if err == nil {
		return nil
	}
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return invalid(fe.field, err.Error())
	case errors.Is(err, action.ErrInvalid):
		return invalid(field, err.Error())
	case errors.Is(err, ErrBadArgument):
		return invalid(field, err.Error())
	case errors.Is(err, ErrNotFound), errors.Is(err, action.ErrNotFound), errors.Is(err, ErrNoLog):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, action.ErrState), errors.Is(err, errRebuilding):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errNATS), errors.Is(err, errNotCaughtUp):
		// Before the context cases: these wrap the deadline that ran out.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case eventlog.Transient(err), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// invalid is InvalidArgument naming the field in a BadRequest detail.
func invalid(field, msg string) error {
	st := status.New(codes.InvalidArgument, msg)
	if field == "" {
		return st.Err()
	}
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}
