package worker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// handler still running after Run or RunBatch returned, or a heartbeat
// timer firing after its message settled. Nothing is ignored: the test
// servers and connections are shut down at each test's cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
