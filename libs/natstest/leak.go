package natstest

import "go.uber.org/goleak"

// ServerShutdownRace is what goleak must let through in a package whose
// tests stop an embedded nats-server while a stage may still have a stream
// or key-value bucket being created: nats-server (v2.15.2) can finish such a
// creation after its JetStream shut down, and the new file store's state
// flusher (and the access-time ticker it registered) then outlive the
// server. Seen once under load in services/ekaci/cmd/ekaci, a serve cancelled
// during its start. Only these two server goroutines are let through: a
// server we forgot to shut down still leaves its accept loops and clients,
// which goleak reports.
func ServerShutdownRace() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
	}
}
