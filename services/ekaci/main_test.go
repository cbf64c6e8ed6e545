package ekaci_test

import (
	"os"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/ekaci/ekaci/libs/natstest"
)

// checkUIDBase gives this package's checkers (in process, and the ekaci
// binaries the crash test starts) uids no other test package uses: a
// checker kills whatever runs under its uids when it starts, and the
// packages' tests run side by side.
const checkUIDBase = 62000

// TestMain fails the package's tests when a goroutine outlives them:
// a stage, the embedded server or a watcher still running after
// the app's Run returned and Close ended it.
func TestMain(m *testing.M) {
	os.Setenv("EKACI_CHECK_UID_BASE", strconv.Itoa(checkUIDBase))
	goleak.VerifyTestMain(m, natstest.ServerShutdownRace()...)
}
