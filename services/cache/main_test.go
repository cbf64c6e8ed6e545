package cache

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a server, an upload or a watch still running after Run
// returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
