package telemetry

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// an HTTP server still serving after Serve returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
