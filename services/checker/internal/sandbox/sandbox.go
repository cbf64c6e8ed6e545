package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limit names the bound that stopped a command.
type Limit int

// The limits, each reported as itself.
const (
	LimitNone Limit = iota
	LimitTimeout
	LimitMemory
	LimitProcesses
	LimitOutput
	LimitFiles
)

func (l Limit) String() string {
	switch l {
	case LimitTimeout:
		return "timeout"
	case LimitMemory:
		return "memory"
	case LimitProcesses:
		return "processes"
	case LimitOutput:
		return "output"
	case LimitFiles:
		return "files written"
	}
	return "none"
}

// Limits bound one run.
type Limits struct {
	Timeout     time.Duration
	MemoryBytes int64
	Processes   int
	OutputBytes int64
	// FilesBytes and Files bound what the command writes (checkout
	// included): bytes and number of files.
	FilesBytes int64
	Files      int64
}

// Config configures a Runner.
type Config struct {
	// StateDir holds one directory per running check (removed after it).
	StateDir string
	// UIDBase and UIDs: each running check gets a uid of its own from
	// UIDBase .. UIDBase+UIDs-1 (also its gid). Nothing else on the
	// machine may use them: any process with one of them is killed.
	UIDBase, UIDs int
	// HostPaths are host directories bound read-only (default none).
	HostPaths []string
	// Bwrap, Prlimit and Slirp4netns are the programs (found on PATH
	// when empty).
	Bwrap, Prlimit, Slirp4netns string
	// NoCgroups turns cgroups off (rlimits only), for tests of the
	// fallback.
	NoCgroups bool
	// MountProc mounts a proc of the runner's own over /proc first: in a
	// container whose runtime masks /proc, bubblewrap cannot mount one
	// for a check otherwise (see mountProc). Never on a host.
	MountProc bool
}

// Spec is one command to run.
type Spec struct {
	// Name is a token for the run's directory and cgroup (a check id).
	Name string
	// Populate fills dir (the future /build) running as uid: what it
	// writes counts against the files limit.
	Populate func(ctx context.Context, dir string, uid int) error
	// Command is run by /bin/sh -c in /build.
	Command string
	// Path are directories put first on PATH (packages' bin dirs).
	Path []string
	// Network gives the command a network (without the host's loopback).
	Network bool
	Limits  Limits
	// Output receives at most Limits.OutputBytes of the command's
	// output (stdout and stderr, interleaved as written).
	Output io.Writer
}

// Result is how a run ended.
type Result struct {
	// ExitCode is the command's exit status (128+n for a signal n).
	ExitCode int
	// Limit is the bound that stopped it; LimitNone when it ended by
	// itself within them.
	Limit    Limit
	Duration time.Duration
	// Leftover counts processes killed after the command ended (daemons
	// it left behind).
	Leftover int
}

// ErrUnavailable means the sandbox cannot run on this machine.
var ErrUnavailable = errors.New("sandbox unavailable")

// Runner runs sandboxed commands.
type Runner struct {
	cfg   Config
	cg    *cgroupRoot // nil: rlimits only
	mount bool        // may mount a tmpfs for the files limit
	mu    sync.Mutex
	free  []int
}

// NewRunner checks that bubblewrap and prlimit are there, kills whatever a
// killed earlier life left running under the uid range, and finds the
// cgroups the machine gives.
func NewRunner(cfg Config) (*Runner, error) {
	if cfg.UIDs <= 0 || cfg.UIDBase <= 0 {
		return nil, fmt.Errorf("%w: no uid range for checks", ErrUnavailable)
	}
	for _, p := range []*string{&cfg.Bwrap, &cfg.Prlimit} {
		name := map[*string]string{&cfg.Bwrap: "bwrap", &cfg.Prlimit: "prlimit"}[p]
		if *p == "" {
			*p = name
		}
		path, err := exec.LookPath(*p)
		if err != nil {
			return nil, fmt.Errorf("%w: %s not found (install bubblewrap and util-linux)", ErrUnavailable, *p)
		}
		*p = path
	}
	if cfg.Slirp4netns == "" {
		cfg.Slirp4netns, _ = exec.LookPath("slirp4netns")
	}
	if cfg.MountProc {
		if err := mountProc(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox state dir: %w", err)
	}
	if err := traversable(cfg.StateDir); err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, mount: os.Geteuid() == 0}
	for i := range cfg.UIDs {
		r.free = append(r.free, cfg.UIDBase+i)
	}
	if !cfg.NoCgroups {
		r.cg = findCgroups()
	}
	r.sweepAll()
	// Directories of runs a killed life left behind.
	if entries, err := os.ReadDir(cfg.StateDir); err == nil {
		for _, e := range entries {
			dir := filepath.Join(cfg.StateDir, e.Name())
			_ = syscall.Unmount(filepath.Join(dir, "fs"), syscall.MNT_DETACH)
			_ = os.RemoveAll(dir)
		}
	}
	if r.cg != nil {
		r.cg.removeStale(r.free)
	}
	return r, nil
}

// Enforcement says how limits are enforced here, for logs and README.
func (r *Runner) Enforcement() string {
	parts := []string{"rlimits (address space, processes, file size)"}
	if r.cg != nil {
		parts = append(parts, r.cg.String())
	}
	if r.mount {
		parts = append(parts, "a tmpfs per check for files written")
	}
	return strings.Join(parts, ", ")
}

// Network reports whether checks can have a network here (slirp4netns).
func (r *Runner) Network() bool { return r.cfg.Slirp4netns != "" }

func (r *Runner) take(ctx context.Context) (int, error) {
	for {
		r.mu.Lock()
		if len(r.free) > 0 {
			uid := r.free[0]
			r.free = r.free[1:]
			r.mu.Unlock()
			return uid, nil
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *Runner) give(uid int) {
	r.mu.Lock()
	r.free = append(r.free, uid)
	r.mu.Unlock()
}

// Run runs spec to its end and returns how it ended. An error means the
// sandbox itself failed (or ctx ended): the command's own failure is a
// Result.
func (r *Runner) Run(ctx context.Context, spec Spec) (Result, error) {
	if spec.Network && r.cfg.Slirp4netns == "" {
		return Result{}, fmt.Errorf("%w: a network was asked for and slirp4netns is not installed", ErrUnavailable)
	}
	uid, err := r.take(ctx)
	if err != nil {
		return Result{}, err
	}
	defer r.give(uid)
	dir, err := os.MkdirTemp(r.cfg.StateDir, spec.Name+"-")
	if err != nil {
		return Result{}, fmt.Errorf("sandbox dir: %w", err)
	}
	defer os.RemoveAll(dir)
	// bubblewrap, running as the check's uid, must reach fs/build to bind
	// it: search permission only, nobody may list it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return Result{}, err
	}
	fs := filepath.Join(dir, "fs")
	if err := r.filesystem(fs, uid, spec.Limits); err != nil {
		return Result{}, err
	}
	mounted := r.mount
	defer func() {
		if mounted {
			_ = syscall.Unmount(fs, syscall.MNT_DETACH)
		}
	}()
	// Never leave a process of this uid behind, whatever happens below.
	defer r.sweep(uid, nil)
	build := filepath.Join(fs, "build")
	if err := spec.Populate(ctx, build, uid); err != nil {
		if mounted && full(fs) {
			return Result{ExitCode: -1, Limit: LimitFiles}, nil
		}
		return Result{}, fmt.Errorf("populate the checkout: %w", err)
	}
	var cg *cgroup
	if r.cg != nil {
		if cg, err = r.cg.create(spec.Name, uid, spec.Limits); err != nil {
			return Result{}, err
		}
		defer cg.remove()
	}
	res, err := r.run(ctx, spec, dir, fs, uid, cg)
	if err != nil {
		return res, err
	}
	res.Leftover = r.sweep(uid, cg)
	switch {
	case res.Limit != LimitNone:
	case cg != nil && cg.oomKilled():
		res.Limit = LimitMemory
	case cg != nil && cg.pidsHit():
		res.Limit = LimitProcesses
	case mounted && full(fs):
		res.Limit = LimitFiles
	}
	return res, nil
}

// traversable gives others search permission (x, never read) on dir and
// its parents: bubblewrap runs as a check's uid and must reach the
// directories it binds.
func traversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("sandbox state dir: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("sandbox state dir: let the checks' uids reach %s: %w", d, err)
			}
		}
		if d == "/" {
			return nil
		}
	}
}

// filesystem makes fs (a tmpfs of the files limit's size when the runner
// may mount) with build/ and tmp/, owned by uid.
func (r *Runner) filesystem(fs string, uid int, lim Limits) error {
	if err := os.Mkdir(fs, 0o700); err != nil {
		return fmt.Errorf("sandbox dir: %w", err)
	}
	if r.mount {
		opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700,uid=%d,gid=%d", max(lim.FilesBytes, 4096), max(lim.Files, 16), uid, uid)
		if err := syscall.Mount("tmpfs", fs, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount the check's tmpfs on %s: %w", fs, err)
		}
	}
	for _, d := range []string{fs, filepath.Join(fs, "build"), filepath.Join(fs, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, uid, uid); err != nil {
			return fmt.Errorf("sandbox dir %s: %w", d, err)
		}
	}
	return nil
}

// full reports whether the tmpfs at fs has no room left, in bytes or
// files: the files limit was what stopped the writer.
func full(fs string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(fs, &st); err != nil {
		return false
	}
	// A few blocks short counts: a write that does not fit is refused
	// whole, leaving a remainder smaller than it.
	return st.Bavail*uint64(st.Bsize) < 64<<10 || st.Ffree == 0
}

const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// bwrapArgs is bubblewrap's command line for spec.
func (r *Runner) bwrapArgs(spec Spec, dir, fs string, uid int) []string {
	path := strings.Join(append(slices.Clone(spec.Path), defaultPath), ":")
	args := []string{
		"--unshare-all", "--unshare-user", "--disable-userns",
		"--uid", strconv.Itoa(uid), "--gid", strconv.Itoa(uid),
		"--die-with-parent", "--new-session", "--cap-drop", "ALL",
		"--hostname", "ekaci-check",
		"--ro-bind-try", "/nix/store", "/nix/store",
	}
	for _, p := range r.cfg.HostPaths {
		args = append(args, "--ro-bind-try", p, p)
	}
	args = append(args,
		"--bind", filepath.Join(fs, "build"), "/build",
		"--bind", filepath.Join(fs, "tmp"), "/tmp",
		"--dev", "/dev", "--proc", "/proc",
		"--chdir", "/build",
		"--clearenv",
		"--setenv", "PATH", path, "--setenv", "HOME", "/build", "--setenv", "TMPDIR", "/tmp",
		"--setenv", "LANG", "C.UTF-8", "--setenv", "CI", "true", "--setenv", "EKACI", "1",
	)
	if spec.Network {
		resolv := filepath.Join(dir, "resolv.conf")
		_ = os.WriteFile(resolv, []byte("nameserver 10.0.2.3\n"), 0o644)
		// fd 3: bubblewrap says the sandbox's pid. The sandbox says on fd
		// 5 that bubblewrap is done setting it up (its loopback too, which
		// slirp4netns must not race), then waits on fd 4 until
		// slirp4netns has set the network up; it closes both before the
		// command runs.
		args = append(args, "--ro-bind", resolv, "/etc/resolv.conf", "--info-fd", "3", "--",
			"/bin/sh", "-c", `echo >&5; exec 5>&-; read -r _ <&4; exec 4<&-; exec /bin/sh -c "$0"`, spec.Command)
		return args
	}
	return append(args, "--", "/bin/sh", "-c", spec.Command)
}

// command wraps bubblewrap: joins the cgroup (v1: by the wrapper itself,
// before anything forks; v2: at clone), sets the rlimits, runs as uid.
func (r *Runner) command(spec Spec, dir, fs string, uid int, cg *cgroup) *exec.Cmd {
	lim := spec.Limits
	as, nproc := lim.MemoryBytes, lim.Processes
	if cg != nil {
		// The cgroup is the limit that is read back; the rlimits are a
		// backstop above it, so that the cgroup hits first.
		as, nproc = max(4*lim.MemoryBytes, lim.MemoryBytes+(1<<30)), lim.Processes+16
	}
	argv := []string{r.cfg.Prlimit,
		"--as=" + strconv.FormatInt(max(as, 64<<20), 10),
		"--nproc=" + strconv.Itoa(max(nproc, 4)),
		"--fsize=" + strconv.FormatInt(max(lim.FilesBytes, 4096), 10),
		"--core=0", "--nofile=4096",
		"--", r.cfg.Bwrap}
	argv = append(argv, r.bwrapArgs(spec, dir, fs, uid)...)
	if cg != nil && len(cg.v1procs) > 0 {
		join := []string{"/bin/sh", "-c", `while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"`, "sh"}
		join = append(join, cg.v1procs...)
		argv = append(append(join, "--"), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + defaultPath}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}},
		Setsid:     true,
		// Set after the uid changes (Go does), so it holds: bubblewrap
		// dies with the runner, and the sandbox with bubblewrap.
		Pdeathsig: syscall.SIGKILL,
	}
	if cg != nil && cg.v2fd != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.v2fd.Fd())
	}
	return cmd
}

func (r *Runner) run(ctx context.Context, spec Spec, dir, fs string, uid int, cg *cgroup) (Result, error) {
	cmd := r.command(spec, dir, fs, uid, cg)
	pr, pw, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	var theirs, ours []*os.File // network set-up pipes: info, block, up
	if spec.Network {
		for i := range 3 {
			r, w, err := os.Pipe()
			if err != nil {
				pw.Close()
				closeAll(theirs)
				closeAll(ours)
				return Result{}, err
			}
			if i == 1 { // block: the sandbox reads
				theirs, ours = append(theirs, r), append(ours, w)
			} else {
				theirs, ours = append(theirs, w), append(ours, r)
			}
		}
		defer closeAll(ours)
		cmd.ExtraFiles = theirs
	}
	start := time.Now()
	err = cmd.Start()
	pw.Close()
	closeAll(theirs)
	if err != nil {
		return Result{}, fmt.Errorf("start bubblewrap: %w", err)
	}
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Process.Kill() }
	var mu sync.Mutex
	limit := LimitNone
	stop := func(l Limit) {
		mu.Lock()
		if limit == LimitNone {
			limit = l
		}
		mu.Unlock()
		kill()
	}
	timeout := spec.Limits.Timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	timer := time.AfterFunc(timeout, func() { stop(LimitTimeout) })
	defer timer.Stop()
	cancelled := context.AfterFunc(ctx, kill)
	defer cancelled()

	var slirp *exec.Cmd
	if spec.Network {
		slirp, err = r.network(ctx, ours[0], ours[1], ours[2])
		if err != nil {
			kill()
			_ = cmd.Wait()
			return Result{}, err
		}
		defer func() { _ = slirp.Process.Kill(); _ = slirp.Wait() }()
	}

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		copyBounded(spec.Output, pr, spec.Limits.OutputBytes, func() { stop(LimitOutput) })
	}()
	werr := cmd.Wait()
	// bubblewrap is gone and with it the sandbox's pid namespace; the
	// pipe's write end may still be held by a process being killed.
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		pr.Close()
		<-copied
	}
	res := Result{Duration: time.Since(start), ExitCode: exitCode(cmd, werr)}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	mu.Lock()
	res.Limit = limit
	mu.Unlock()
	if res.Limit != LimitNone {
		res.ExitCode = -1
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		return res, fmt.Errorf("run bubblewrap: %w", werr)
	}
	return res, nil
}

func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// copyBounded copies src to dst until src ends; past max bytes it writes a
// notice and calls over once, then drains src.
func copyBounded(dst io.Writer, src io.Reader, limit int64, over func()) {
	if dst == nil {
		dst = io.Discard
	}
	if limit <= 0 {
		limit = 1 << 62
	}
	buf := make([]byte, 32<<10)
	var n int64
	cut := false
	for {
		k, err := src.Read(buf)
		if k > 0 && !cut {
			chunk := buf[:k]
			if n+int64(k) > limit {
				chunk = chunk[:limit-n]
				cut = true
			}
			_, _ = dst.Write(chunk)
			n += int64(len(chunk))
			if cut {
				fmt.Fprintf(dst, "\n[ekaci: output cut at %d bytes, its limit; the check was stopped]\n", limit)
				over()
			}
		}
		if err != nil {
			return
		}
	}
}

// network starts slirp4netns for the sandbox bubblewrap reports on info,
// with the host's loopback refused, and releases the sandbox through
// block once it is up.
func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// readByte waits for one byte on f, at most 30 s.
func readByte(ctx context.Context, f *os.File) error {
	one := make([]byte, 1)
	done := make(chan error, 1)
	go func() { _, err := f.Read(one); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("nothing after 30 s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) network(ctx context.Context, info, block, up *os.File) (*exec.Cmd, error) {
	var pid int
	sc := bufio.NewScanner(info)
	for sc.Scan() && pid == 0 {
		line := sc.Text()
		if i := strings.Index(line, `"child-pid"`); i >= 0 {
			rest := strings.TrimLeft(line[i+len(`"child-pid"`):], ": ")
			rest = strings.TrimRight(rest, ",} ")
			pid, _ = strconv.Atoi(rest)
		}
	}
	if pid == 0 {
		return nil, errors.New("bubblewrap did not say its sandbox's pid")
	}
	if err := readByte(ctx, up); err != nil {
		return nil, fmt.Errorf("sandbox not set up: %w", err)
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ready.Close()
	// The network namespace by path, joining no user namespace: bubblewrap
	// moves its child into a nested user namespace (--disable-userns) at
	// a moment of its own, and by pid slirp4netns would join whichever it
	// is in then (the nested one cannot enter the namespace above it).
	// The runner, root on the host, may enter the network namespace.
	slirp := exec.Command(r.cfg.Slirp4netns, "--configure", "--mtu=65520", "--disable-host-loopback", "--ready-fd=3",
		"--netns-type=path", "/proc/"+strconv.Itoa(pid)+"/ns/net", "tap0")
	slirp.ExtraFiles = []*os.File{readyW}
	var slirpErr bytes.Buffer
	slirp.Stderr = &slirpErr
	slirp.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := slirp.Start(); err != nil {
		readyW.Close()
		return nil, fmt.Errorf("start slirp4netns: %w", err)
	}
	readyW.Close()
	if err := readByte(ctx, ready); err != nil {
		_ = slirp.Process.Kill()
		_ = slirp.Wait()
		return nil, fmt.Errorf("slirp4netns: %w (%s)", err, strings.TrimSpace(slirpErr.String()))
	}
	if _, err := block.Write([]byte("\n")); err != nil {
		_ = slirp.Process.Kill()
		_ = slirp.Wait()
		return nil, fmt.Errorf("release the sandbox: %w", err)
	}
	return slirp, nil
}
