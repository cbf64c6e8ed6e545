package builder

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a pool's worker, a lane, a holder's heartbeat, a copy's watch or a log
// shipper still running after Run returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
