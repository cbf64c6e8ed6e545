package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// sweep kills every process of uid (and of the cgroup) until none is left,
// and returns how many it found. The pid namespace normally takes them all
// with the command; this is the proof, and the backstop.
func (r *Runner) sweep(uid int, cg *cgroup) int {
	seen := map[int]bool{}
	for deadline := time.Now().Add(30 * time.Second); ; {
		pids := uidProcs(map[int]bool{uid: true})
		if cg != nil {
			pids = append(pids, cg.procs()...)
		}
		if len(pids) == 0 {
			return len(seen)
		}
		for _, pid := range pids {
			seen[pid] = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return len(seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweepAll kills the processes of every uid of the range.
func (r *Runner) sweepAll() {
	uids := map[int]bool{}
	for i := range r.cfg.UIDs {
		uids[r.cfg.UIDBase+i] = true
	}
	for range 100 {
		pids := uidProcs(uids)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// uidProcs lists the live processes (not zombies) whose real, effective
// or saved uid is in uids.
func uidProcs(uids map[int]bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		if procOf(status, uids) {
			out = append(out, pid)
		}
	}
	return out
}

func procOf(status []byte, uids map[int]bool) bool {
	zombie := false
	match := false
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("State:")); ok {
			zombie = bytes.Contains(rest, []byte("Z"))
		}
		if rest, ok := bytes.CutPrefix(line, []byte("Uid:")); ok {
			for _, f := range bytes.Fields(rest)[:3] {
				if n, err := strconv.Atoi(string(f)); err == nil && uids[n] {
					match = true
				}
			}
		}
	}
	return match && !zombie
}

// Procs lists the live processes of the runner's uid range: empty when
// no check is running. For tests and the restart sweep.
func (r *Runner) Procs() []int {
	uids := map[int]bool{}
	for i := range r.cfg.UIDs {
		uids[r.cfg.UIDBase+i] = true
	}
	return uidProcs(uids)
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
