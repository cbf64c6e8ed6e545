package natsembed

import "errors"

// ErrDataDir means the data dir cannot be created or written.
var ErrDataDir = errors.New("nats data dir unusable")

// ErrPortInUse means a port the server must listen on is taken.
var ErrPortInUse = errors.New("port in use")

// ErrStoreLocked means another process runs a server on the same store.
var ErrStoreLocked = errors.New("nats store in use")

// ErrStart means nats-server refused to start or did not become ready.
var ErrStart = errors.New("nats server did not start")
