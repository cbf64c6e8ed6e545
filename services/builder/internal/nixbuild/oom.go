package nixbuild

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// How we decide a death was the OOM killer, honestly a heuristic:
//
// Linux (>= 4.13) counts every OOM kill, global or cgroup-limited, in the
// oom_kill line of /proc/vmstat. We read it before starting nix-build and
// after it exits. The counter is machine-wide (or, in a container, usually
// the host's), so it says "some process was OOM-killed while this build
// ran", not "this process was". Other builds running at the same time can
// therefore make us blame OOM for a SIGKILL that an operator sent, and we
// have no way to see the kernel log to be sure. We accept that: a SIGKILL
// we did not send while the OOM killer was active is far more likely OOM
// than anything else on a build machine.
//
//   - nix-build itself died of SIGKILL: OutOfMemory if the counter rose or
//     cannot be read (SIGKILL from nowhere on a build box is usually OOM),
//     ProcessDeath if it is readable and did not rise.
//   - nix-build exited non-zero reporting "builder ... failed due to
//     signal 9 (Killed)": OutOfMemory only if the counter rose; otherwise
//     this stays a Failed build, because a builder may kill itself or its
//     tests with -9, and calling a real failure OOM would make it look
//     retryable.
//
// Remote builds (Options.Builders) are OOM-killed on another machine; the
// local counter cannot see that, so those stay Failed.

// oomKillCount returns the machine's OOM kill counter and whether it could
// be read. A variable so tests can stand in for the kernel.
var oomKillCount = readVMStatOOMKills

func readVMStatOOMKills() (uint64, bool) {
	f, err := os.Open("/proc/vmstat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("oom_kill ")); ok {
			n, err := strconv.ParseUint(string(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

type oomProbe struct {
	before uint64
	ok     bool
}

func startOOMProbe() oomProbe {
	n, ok := oomKillCount()
	return oomProbe{before: n, ok: ok}
}

// rose reports whether the counter went up since start; known is false
// when it could not be read at either end.
func (p oomProbe) rose() (rose, known bool) {
	n, ok := oomKillCount()
	if !p.ok || !ok {
		return false, false
	}
	return n > p.before, true
}
