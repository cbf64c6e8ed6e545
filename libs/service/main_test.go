package service

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// stage body, the HTTP server or the storage watch still running after
// Main returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
