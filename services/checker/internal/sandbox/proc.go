package sandbox

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// initPidNS is the inode of the kernel's initial pid namespace
// (PROC_PID_INIT_INO, include/linux/proc_ns.h): a host's, never a
// container's (unless it shares the host's pids).
const initPidNS = "pid:[4026531836]"

// errHostProc refuses to cover a host's /proc.
var errHostProc = errors.New("refused to mount a proc over /proc in the host's pid namespace: --mount-proc is for a container of the checker's own")

// mountProc mounts a proc filesystem of this process's own over /proc.
//
// bubblewrap, running as a check's uid in a user namespace of its own,
// mounts a fresh /proc for the check's pid namespace. The kernel allows
// that only when a proc mount with nothing mounted over it is visible
// (fs/namespace.c, mount_too_revealing), and it writes
// /proc/sys/user/max_user_namespaces through the /proc it started with
// (--disable-userns). A container runtime masks /proc (files and
// directories bound over /proc/kcore, /proc/acpi, ...) and makes /proc/sys
// read-only, so bubblewrap fails there with "Can't mount proc" and then
// "cannot open /proc/sys/user/max_user_namespaces: Read-only file system".
// Root with CAP_SYS_ADMIN, which the checker's container is given for
// this, may mount a proc of its own: it shows the same processes (the
// container's pid namespace), without the masks.
//
// Only in a container that is the checker's alone: on a host it would
// cover the host's /proc for every process of the mount namespace, so it
// refuses in the kernel's initial pid namespace (errHostProc).
func mountProc() error {
	return mountProcIn(pidNamespace())
}

func pidNamespace() string {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return ns
}

// mountProcIn mounts it unless ns, this process's pid namespace, is the
// host's or unknown.
func mountProcIn(ns string) error {
	if ns == "" || ns == initPidNS {
		return fmt.Errorf("%w: %w (pid namespace %q)", ErrUnavailable, errHostProc, ns)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("%w: mount a proc of its own over the container's masked /proc (the container needs CAP_SYS_ADMIN): %v", ErrUnavailable, err)
	}
	return nil
}
