package telemetry

import "errors"

var (
	// ErrBadLevel means a log level name zerolog does not know.
	ErrBadLevel = errors.New("unknown log level")
	// ErrBadFormat means a log format other than json, console or auto.
	ErrBadFormat = errors.New("unknown log format")
)
