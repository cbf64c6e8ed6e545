package webhook_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a server or a request handler still running after Run
// returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
