package nixbuild

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// Why process groups are not enough on their own: nix-build runs in its own
// group (Setpgid), but Nix starts every builder (and the build-remote hook)
// with setsid(), so a builder lives in a session and group of its own.
// On SIGTERM nix-build kills its builders itself ("interrupted by the
// user"); on SIGKILL, or when it dies of something else, the builder is
// orphaned. So while nix-build runs we keep a list of the process groups of
// its descendants (refreshed every snapshotEvery), and kill those groups too
// whenever nix-build was killed or died of a signal.

// groupSet is the process groups below nix-build seen recently.
type groupSet map[int]struct{}

// refresh adds the groups of pid's current descendants and drops groups
// that no longer have any member. Dropping dead groups right away keeps
// the window for PID reuse (killing an unrelated group that got the same
// number) to about one snapshot interval; in practice the kernel does not
// reuse a PID that quickly.
func (s groupSet) refresh(pid, own int) {
	for g := range s {
		if syscall.Kill(-g, 0) == syscall.ESRCH {
			delete(s, g)
		}
	}
	for _, g := range descendantGroups(pid) {
		if g != own && g > 1 {
			s[g] = struct{}{}
		}
	}
}

func (s groupSet) kill(sig syscall.Signal) {
	for g := range s {
		_ = syscall.Kill(-g, sig) // ESRCH: already gone
	}
}

// descendantGroups returns the process group of every descendant of pid.
func descendantGroups(pid int) []int {
	var groups []int
	seen := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 && len(seen) < 10000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range childrenOf(p) {
			if seen[c] {
				continue
			}
			seen[c] = true
			if g, ok := pgidOf(c); ok {
				groups = append(groups, g)
			}
			queue = append(queue, c)
		}
	}
	return groups
}

// childrenOf reads /proc/<pid>/task/*/children (CONFIG_PROC_CHILDREN, on in
// every mainstream kernel), which costs a few reads instead of a scan of
// all of /proc. Without it we fall back to that scan.
func childrenOf(pid int) []int {
	if !haveChildrenFiles() {
		return scanChildren(pid)
	}
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var kids []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if n, err := strconv.Atoi(string(f)); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

var haveChildrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
	return err == nil
})

func scanChildren(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(n); ok && st.ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

func pgidOf(pid int) (int, bool) {
	st, ok := readStat(pid)
	return st.pgrp, ok
}

type procStat struct {
	state byte
	ppid  int
	pgrp  int
	// start is the process's start time in clock ticks since boot: with
	// the pid, it names one process even after the pid is reused.
	start uint64
}

// readStat parses /proc/<pid>/stat. The command name is in parentheses and
// may itself contain spaces and parentheses, so fields are taken after the
// last ')'.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, start: start}, true
}
