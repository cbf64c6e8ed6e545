package ekaci_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a stage, the embedded server or a watcher still running after
// the app's Run returned and Close ended it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
