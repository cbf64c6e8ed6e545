package sandbox

import (
	"fmt"
	"syscall"
)

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
// cover the host's /proc for every process of the mount namespace.
func mountProc() error {
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("%w: mount a proc of its own over the container's masked /proc (the container needs CAP_SYS_ADMIN): %v", ErrUnavailable, err)
	}
	return nil
}
