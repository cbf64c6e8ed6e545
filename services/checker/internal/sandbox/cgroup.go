package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cgroupRoot is where a check's cgroups are made: a cgroup v2 directory
// that delegates the memory and pids controllers, or the v1 memory and
// pids hierarchies (either may be missing).
type cgroupRoot struct {
	v2         string
	mem, pids  string // v1
	memSwapCap bool   // v1 memory.memsw (swap accounting) present
}

const cgroupPrefix = "ekaci-check-"

// findCgroups finds the cgroups this process may make children in, by
// trying: nil when there are none (rlimits only).
func findCgroups() *cgroupRoot {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	root := &cgroupRoot{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir := filepath.Join("/sys/fs/cgroup", parts[2])
			// Delegated: the controllers are enabled for our children
			// already (we may not enable them in a cgroup we sit in).
			sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
			if err == nil && bytes.Contains(sub, []byte("memory")) && bytes.Contains(sub, []byte("pids")) && probe(dir) {
				root.v2 = dir
			}
		case parts[1] == "memory":
			if dir := filepath.Join("/sys/fs/cgroup/memory", parts[2]); probe(dir) {
				root.mem = dir
				_, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
				root.memSwapCap = err == nil
			}
		case parts[1] == "pids":
			if dir := filepath.Join("/sys/fs/cgroup/pids", parts[2]); probe(dir) {
				root.pids = dir
			}
		}
	}
	if root.v2 != "" {
		root.mem, root.pids = "", ""
	}
	if root.v2 == "" && root.mem == "" && root.pids == "" {
		return nil
	}
	return root
}

// probe reports whether a child cgroup can be made in dir.
func probe(dir string) bool {
	p := filepath.Join(dir, cgroupPrefix+"probe-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(p, 0o755); err != nil {
		return false
	}
	_ = os.Remove(p)
	return true
}

func (c *cgroupRoot) String() string {
	if c.v2 != "" {
		return "cgroup v2 (memory, pids)"
	}
	var have []string
	if c.mem != "" {
		have = append(have, "memory")
	}
	if c.pids != "" {
		have = append(have, "pids")
	}
	return "cgroup v1 (" + strings.Join(have, ", ") + ")"
}

// removeStale removes the cgroups of uids (a killed life's), and kills
// what is left in them: only the runner's own uids, never another
// runner's.
func (c *cgroupRoot) removeStale(uids []int) {
	for _, base := range []string{c.v2, c.mem, c.pids} {
		if base == "" {
			continue
		}
		for _, uid := range uids {
			dir := filepath.Join(base, cgroupPrefix+strconv.Itoa(uid))
			if _, err := os.Stat(dir); err != nil {
				continue
			}
			killCgroup(dir)
			_ = os.Remove(dir)
		}
	}
}

// cgroup is one check's.
type cgroup struct {
	dirs     []string
	mem      string // the dir holding memory.* files
	pids     string // the dir holding pids.* files
	v2       bool
	v2fd     *os.File
	v1procs  []string // cgroup.procs files the wrapper writes itself into
	memLimit int64
}

func (c *cgroupRoot) create(name string, uid int, lim Limits) (*cgroup, error) {
	cg := &cgroup{memLimit: lim.MemoryBytes}
	mk := func(base string) (string, error) {
		dir := filepath.Join(base, cgroupPrefix+strconv.Itoa(uid))
		killCgroup(dir)
		_ = os.Remove(dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", fmt.Errorf("cgroup for check %s: %w", name, err)
		}
		cg.dirs = append(cg.dirs, dir)
		return dir, nil
	}
	write := func(dir, file, value string) error {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
			return fmt.Errorf("cgroup %s: set %s: %w", dir, file, err)
		}
		return nil
	}
	fail := func(err error) (*cgroup, error) {
		cg.remove()
		return nil, err
	}
	mem := strconv.FormatInt(max(lim.MemoryBytes, 16<<20), 10)
	pids := strconv.Itoa(max(lim.Processes, 4))
	if c.v2 != "" {
		dir, err := mk(c.v2)
		if err != nil {
			return fail(err)
		}
		cg.v2, cg.mem, cg.pids = true, dir, dir
		for _, kv := range [][2]string{{"memory.max", mem}, {"memory.swap.max", "0"}, {"pids.max", pids}} {
			if err := write(dir, kv[0], kv[1]); err != nil && kv[0] != "memory.swap.max" {
				return fail(err)
			}
		}
		if cg.v2fd, err = os.Open(dir); err != nil {
			return fail(err)
		}
		return cg, nil
	}
	if c.mem != "" {
		dir, err := mk(c.mem)
		if err != nil {
			return fail(err)
		}
		cg.mem = dir
		if err := write(dir, "memory.limit_in_bytes", mem); err != nil {
			return fail(err)
		}
		if c.memSwapCap {
			// No swap: the memory limit is the limit.
			if err := write(dir, "memory.memsw.limit_in_bytes", mem); err != nil {
				return fail(err)
			}
		}
		cg.v1procs = append(cg.v1procs, filepath.Join(dir, "cgroup.procs"))
	}
	if c.pids != "" {
		dir, err := mk(c.pids)
		if err != nil {
			return fail(err)
		}
		cg.pids = dir
		if err := write(dir, "pids.max", pids); err != nil {
			return fail(err)
		}
		cg.v1procs = append(cg.v1procs, filepath.Join(dir, "cgroup.procs"))
	}
	// The wrapper joins as the check's uid, before it forks anything.
	for _, f := range cg.v1procs {
		if err := os.Chown(f, uid, uid); err != nil {
			return fail(fmt.Errorf("cgroup %s: %w", f, err))
		}
	}
	return cg, nil
}

// counter reads "key N" from a cgroup's file.
func counter(dir, file, key string) int64 {
	if dir == "" {
		return 0
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// oomKilled reports whether the kernel killed a process of the check for
// its memory limit.
func (cg *cgroup) oomKilled() bool {
	if cg.v2 {
		return counter(cg.mem, "memory.events", "oom_kill") > 0
	}
	return counter(cg.mem, "memory.oom_control", "oom_kill") > 0
}

// pidsHit reports whether a fork was refused for the processes limit.
func (cg *cgroup) pidsHit() bool { return counter(cg.pids, "pids.events", "max") > 0 }

func (cg *cgroup) procs() []int {
	var out []int
	for _, dir := range cg.dirs {
		out = append(out, readProcs(dir)...)
	}
	return out
}

func readProcs(dir string) []int {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for f := range strings.FieldsSeq(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func killCgroup(dir string) {
	for range 100 {
		pids := readProcs(dir)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = killPid(pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (cg *cgroup) remove() {
	if cg.v2fd != nil {
		cg.v2fd.Close()
	}
	for _, dir := range cg.dirs {
		killCgroup(dir)
		for range 50 {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
