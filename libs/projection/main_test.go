package projection_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// runner, a feed or a consumer callback still running after Run returned.
// Nothing is ignored: the test servers and connections are shut down at
// each test's cleanup, so their goroutines end too.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
