package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// reader of the ekaci binary's output, or an app started in process,
// still running after its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
