// Package sandbox runs one untrusted command (a check from a pull request)
// under bubblewrap, as an unprivileged user of its own, with every resource
// bounded, and says which bound stopped it.
//
// What the command sees: a read-only /nix/store, its own writable copy of
// the checkout at /build, a private /tmp, a minimal /dev and /proc, and the
// host's read-only system directories the runner is given (HostPaths; on
// a machine without nixpkgs, the shell and coreutils come from there).
// Nothing else: no /etc (no passwords, no keys), no home directory, no
// data dir, no Nix daemon socket, no other checkout. It runs with a uid of
// its own (one per running check, from the runner's range), no
// capabilities, no_new_privs (setuid binaries do not elevate), in new
// user, pid, mount, IPC, UTS, cgroup and network namespaces and a new
// session (no TIOCSTI into a terminal). Without Network it has only a
// loopback of its own; with it, traffic goes through slirp4netns with the
// host's loopback refused, so NATS and other local services stay out of
// reach.
//
// Limits: a wall-clock timeout, output bytes, bytes and files written (the
// checkout and /tmp live on one tmpfs of that size when the runner may
// mount, else RLIMIT_FSIZE bounds each file), memory and processes
// (a cgroup of the check's own where the machine gives one — v2, or v1's
// memory and pids controllers — with RLIMIT_AS and RLIMIT_NPROC always
// set as well). A limit hit is reported as that limit, read from the
// kernel (the cgroup's OOM and pids counters, the tmpfs' free space),
// never from the command's output.
//
// No process outlives its check: the pid namespace dies with the command,
// bubblewrap dies with the runner (parent-death signal), and after each
// run every process of the check's uid and cgroup is killed, and Run
// returns only once none is left.
package sandbox
