package natstest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a server or a cluster node still running after its test's
// cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
