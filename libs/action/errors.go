package action

import "errors"

var (
	// ErrNotFound: the log holds nothing about the derivation, jobset or
	// change named.
	ErrNotFound = errors.New("not found")
	// ErrState: the aggregate is not in a state the action applies to
	// (the error says which state it is in).
	ErrState = errors.New("wrong state for this action")
	// ErrInvalid: an argument is malformed (an id that is no subject
	// token, an actor without a name or with an unknown source).
	ErrInvalid = errors.New("invalid argument")
)
