package recorder

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a report worker or the read model's runner still running after
// Run returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
