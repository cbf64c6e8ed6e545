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

// GCPercentWithLimit is the collector's GOGC while a memory limit is in
// force: the limit keeps a large heap in bounds, so a small one may grow
// five times its live data between collections instead of twice. Reading
// 2,000 .drv files, that is 5.2-5.5x `nix show-derivation -r` instead of
// 3.9-4.5x (bin/ekaci-bench -scenario closure, GOGC=400 vs 100).
const GCPercentWithLimit = 400

// SetMemoryLimit sets the Go runtime's soft memory limit to mib MiB (0:
// none) and, with a limit, GOGC to GCPercentWithLimit. GOMEMLIMIT and GOGC
// in the environment win: an operator who set them meant it. It returns
// the limit in force, in bytes (math.MaxInt64: none).
func SetMemoryLimit(mib int) int64 {
	if os.Getenv("GOMEMLIMIT") != "" || mib <= 0 {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(int64(mib) << 20)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercentWithLimit)
	}
	return int64(mib) << 20
}
