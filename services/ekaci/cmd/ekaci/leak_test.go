package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/ekaci/ekaci/libs/natstest"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// reader of the ekaci binary's output, or an app started in process,
// still running after its test.
//
// The checkers of this package's runs (in process and the binaries the
// tests start) get uids no other test package uses: a checker kills
// whatever runs under its uids when it starts, and the packages' tests
// run side by side.
func TestMain(m *testing.M) {
	os.Setenv("EKACI_CHECK_UID_BASE", "62100")
	goleak.VerifyTestMain(m, natstest.ServerShutdownRace()...)
}
