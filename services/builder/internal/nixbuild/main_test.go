package nixbuild

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a reader of Nix's output, a supervisor or a store session
// still running after its build or session ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
