package service

import (
	"os"
	"runtime/debug"
)

// DefaultMemoryLimitMiB is the all-in-one's soft memory limit: with every
// stage and the embedded NATS server in one process, most of the heap is
// garbage between collections, and a limit makes the collector return it
// instead of letting the process grow to twice its live data.
const DefaultMemoryLimitMiB = 900

// SetMemoryLimit sets the Go runtime's soft memory limit to mib MiB (0:
// none). GOMEMLIMIT in the environment wins: an operator who set it meant
// it. It returns the limit in force, in bytes (math.MaxInt64: none).
func SetMemoryLimit(mib int) int64 {
	if os.Getenv("GOMEMLIMIT") != "" || mib <= 0 {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(int64(mib) << 20)
	return int64(mib) << 20
}
