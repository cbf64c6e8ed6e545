package nixeval

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysProcAttr puts the Nix process in a process group of its own, killed
// whole on cancellation, and has the kernel kill it if ekaci dies first
// (an evaluation nobody will read must not run on).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killTree kills pid's process group and every descendant of pid, also
// those in process groups of their own (Nix gives each builder of an
// import-from-derivation one). Descendants are stopped first, until no
// new one appears, so none forks out of reach while the tree is read.
func killTree(pid int) {
	stopped := map[int]bool{}
	for range 20 {
		var fresh []int
		for _, p := range descendants(pid) {
			if !stopped[p] {
				stopped[p] = true
				fresh = append(fresh, p)
				_ = syscall.Kill(p, syscall.SIGSTOP)
			}
		}
		if len(fresh) == 0 {
			break
		}
		// SIGSTOP is delivered asynchronously: until a process has stopped
		// it may still fork, so the tree is read again only after.
		deadline := time.Now().Add(200 * time.Millisecond)
		for _, p := range fresh {
			for !halted(p) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for p := range stopped {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// halted reports whether pid is stopped, a zombie, or gone.
func halted(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	switch s[i+2] {
	case 'T', 't', 'Z', 'X':
		return true
	}
	return false
}

// descendants returns pid and every process below it, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
