// Package eventlogtest gives a test an event log of its own: an embedded
// JetStream server on a random port with a temporary store, connected,
// with ekaci's streams provisioned.
package eventlogtest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/natstest"
)

// JetStream starts the server, connects and provisions the streams; the
// server stops when the test ends.
func JetStream(t testing.TB, ctx context.Context) jetstream.JetStream {
	t.Helper()
	return JetStreamWith(t, ctx, eventlog.StreamOptions{})
}

// JetStreamWith is JetStream with stream options of the test's choosing,
// e.g. a DuplicateWindow of a second, so that a test can replay a fact
// after the window and see that nothing is decided twice.
func JetStreamWith(t testing.TB, ctx context.Context, o eventlog.StreamOptions) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	if err := eventlog.Provision(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	return js
}
