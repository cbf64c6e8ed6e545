package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a stage of the pipeline or a counter's consumer still running
// after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
