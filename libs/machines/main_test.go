package machines

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// health checker or a ping still running after its context ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
