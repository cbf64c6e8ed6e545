// Package natstest starts real, embedded NATS JetStream servers for tests:
// random ports, stores under the test's temp dir, shut down at cleanup.
// NewClusterFromDir starts the deployed 3-node cluster from its own config
// files (deploy/nats), and Proxy sits between a client and a server to
// lose acknowledgements or connections on demand. Eventually polls a
// condition with a deadline, never a bare sleep.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewServer starts a single JetStream server on a random loopback port with
// its store in tb.TempDir(), and stops it when the test ends.
func NewServer(tb testing.TB) *server.Server {
	tb.Helper()
	return NewServerAt(tb, tb.TempDir())
}

// NewServerAt is NewServer with a chosen store directory, so a test can stop
// a server and start another on the same store (a restart).
func NewServerAt(tb testing.TB, storeDir string) *server.Server {
	tb.Helper()
	return NewServerWith(tb, storeDir, nil)
}

// StoreLimit is a test server's JetStream store limit unless configured
// otherwise: explicit, so that the streams' reserved byte budgets fit
// whatever the free disk of the machine running the tests (nats-server's
// default is 75 % of it), and far above what a test writes.
const StoreLimit = 1 << 40

// NewServerWith is NewServerAt with the server's options adjusted by
// configure (nil: none), e.g. a small JetStreamMaxStore.
func NewServerWith(tb testing.TB, storeDir string, configure func(*server.Options)) *server.Server {
	tb.Helper()
	opts := &server.Options{
		ServerName:        "natstest",
		Host:              "127.0.0.1",
		Port:              -1,
		JetStream:         true,
		JetStreamMaxStore: StoreLimit,
		StoreDir:          storeDir,
		NoLog:             true,
		NoSigs:            true,
	}
	if configure != nil {
		configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("natstest: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatalf("natstest: server not ready within 10s")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed at cleanup, and returns it
// with a JetStream handle.
func Connect(tb testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Name(tb.Name()))
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", s.ClientURL(), err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Eventually polls cond every 10ms until it returns true or the deadline
// passes, then fails the test with msg.
func Eventually(tb testing.TB, within time.Duration, cond func() bool, msg string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("not true within %v: %s", within, msg)
}
