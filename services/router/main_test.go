package router

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// the health checker Run starts, or a batch still being routed,
// after Run returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
