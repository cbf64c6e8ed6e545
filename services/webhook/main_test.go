package webhook_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them:
// a server or a request handler still running after Run
// returned. In a child process of TestSIGKILLedWebhook it runs the
// webhook alone until it is killed.
func TestMain(m *testing.M) {
	if os.Getenv("EKACI_WEBHOOK_CHILD") == "1" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m)
}
