package admin_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ekaci/ekaci/libs/natstest"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// gRPC or HTTP server, a follow or a watch still running after its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.ServerShutdownRace()...)
}
