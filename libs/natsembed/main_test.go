package natsembed

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a server, or the watch of its shutdown, still running after
// Shutdown returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
