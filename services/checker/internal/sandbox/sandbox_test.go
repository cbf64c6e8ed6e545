package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/natstest"
)

// hostPaths are what a machine without nixpkgs lends the sandbox: a shell,
// coreutils and perl (the hostile checks below are perl and sh).
var hostPaths = []string{"/usr", "/bin", "/lib", "/lib64", "/sbin"}

func newRunner(t *testing.T, mod func(*Config)) *Runner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the sandbox tests run as root: the runner gives each check a uid of its own (make test runs as root)")
	}
	// EKACI_SANDBOX_MOUNT_PROC=1: the tests run inside the checker's
	// container (deploy/compose), which masks /proc as every container does.
	cfg := Config{StateDir: filepath.Join(t.TempDir(), "sandbox"), UIDBase: 64000, UIDs: 4, HostPaths: hostPaths,
		MountProc: os.Getenv("EKACI_SANDBOX_MOUNT_PROC") == "1"}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatalf("NewRunner: %v (install bubblewrap: make test does)", err)
	}
	t.Cleanup(func() {
		if left := r.Procs(); len(left) > 0 {
			t.Errorf("processes of the check uids left after the test: %v", left)
		}
	})
	return r
}

// files writes a checkout of name -> content into dir as uid.
func files(m map[string]string) func(ctx context.Context, dir string, uid int) error {
	return func(ctx context.Context, dir string, uid int) error {
		for name, content := range m {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
				return err
			}
			if err := os.Chown(p, uid, uid); err != nil {
				return err
			}
		}
		return nil
	}
}

func defaultLimits() Limits {
	return Limits{Timeout: 20 * time.Second, MemoryBytes: 256 << 20, Processes: 64, OutputBytes: 1 << 20, FilesBytes: 16 << 20, Files: 1000}
}

type outcome struct {
	res Result
	out string
}

func run(t *testing.T, r *Runner, spec Spec) outcome {
	t.Helper()
	var buf bytes.Buffer
	spec.Output = &buf
	if spec.Name == "" {
		spec.Name = "t"
	}
	if spec.Populate == nil {
		spec.Populate = files(nil)
	}
	if spec.Limits == (Limits{}) {
		spec.Limits = defaultLimits()
	}
	res, err := r.Run(context.Background(), spec)
	if err != nil {
		t.Fatalf("Run(%q): %v", spec.Command, err)
	}
	if left := r.Procs(); len(left) > 0 {
		t.Errorf("Run(%q) returned with processes of the check left: %v", spec.Command, left)
	}
	return outcome{res, buf.String()}
}

func TestPlainCommands(t *testing.T) {
	r := newRunner(t, nil)
	for _, tc := range []struct {
		name, cmd, want string
		code            int
	}{
		{"succeeds", "echo hello; ./script.sh", "hello\nfrom the checkout\n", 0},
		{"fails with its exit code", "echo no >&2; exit 3", "no\n", 3},
		{"writes in its checkout and /tmp", "echo a > f && echo b > /tmp/g && cat f /tmp/g", "a\nb\n", 0},
		{"an unprivileged uid, no capabilities, no /etc", "id -u | grep -qx 0 && echo root; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status | grep -v 0000000000000000; ls /etc 2>/dev/null; echo done", "done\n", 0},
		{"a clean environment", "env | sort | grep -v -E '^(PATH|HOME|TMPDIR|LANG|CI|EKACI|PWD|SHLVL|_)=' ; echo done", "done\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := run(t, r, Spec{Command: tc.cmd, Populate: files(map[string]string{"script.sh": "#!/bin/sh\necho from the checkout\n"})})
			if o.res.Limit != LimitNone || o.res.ExitCode != tc.code || o.out != tc.want {
				t.Errorf("Run(%q) = %v exit %d %q, want no limit, exit %d, %q", tc.cmd, o.res.Limit, o.res.ExitCode, o.out, tc.code, tc.want)
			}
		})
	}
}

// TestHostileChecks is the battery of the issue: every row is a check
// that tries to escape or exhaust, and each is asserted from the host's
// side where the host can see it (a file not written, a connection not
// accepted, no process left), and from its own output otherwise (a line
// ESCAPE:<what> printed only when the hostile step succeeded).
func TestHostileChecks(t *testing.T) {
	r := newRunner(t, nil)
	t.Logf("enforcement: %s", r.Enforcement())
	secretDir := t.TempDir() // stands for the server's data dir (NATS store, mirrors, other checkouts)
	for _, d := range []string{"nats/jetstream", "git/worktrees/other"} {
		if err := os.MkdirAll(filepath.Join(secretDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := "ekaci-secret-" + fmt.Sprint(time.Now().UnixNano())
	for _, f := range []string{"nats/jetstream/meta.inf", "git/worktrees/other/main.c", "token"} {
		if err := os.WriteFile(filepath.Join(secretDir, f), []byte(secret), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	home, _ := os.UserHomeDir()

	// Host loopback services: an HTTP server, and a real NATS server (as
	// the embedded one listens on loopback). Each counts what reaches it.
	var httpHits atomic.Int64
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { httpHits.Add(1); fmt.Fprint(w, secret) }))
	defer web.Close()
	ns := natstest.NewServer(t)
	natsConns := func() int64 {
		v, err := ns.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return int64(v.TotalConnections)
	}
	webPort := strings.TrimPrefix(web.URL, "http://127.0.0.1:")
	natsPort := ns.ClientURL()[strings.LastIndex(ns.ClientURL(), ":")+1:]
	connect := func(hosts ...string) string {
		var s strings.Builder
		for _, h := range hosts {
			for _, p := range []string{webPort, natsPort} {
				fmt.Fprintf(&s, `perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(PeerAddr=>"%s:%s",Timeout=>3); print "ESCAPE:connect %s:%s\n" if $s;';`, h, p, h, p)
			}
		}
		return s.String()
	}
	outside := `perl -MSocket -e '@a=gethostbyname("example.com"); print "ESCAPE:resolved\n" if @a;'; perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(PeerAddr=>"1.1.1.1:443",Timeout=>3); print "ESCAPE:outside\n" if $s;'`

	lim := defaultLimits()
	short := lim
	short.Timeout = 5 * time.Second // under load, bubblewrap alone may take a second or two to start
	tiny := lim
	tiny.FilesBytes, tiny.Files = 4<<20, 200
	for _, tc := range []struct {
		name    string
		cmd     string
		network bool
		limits  Limits
		want    Limit
		// host checks what the host sees afterwards; nil: nothing.
		host func(t *testing.T, o outcome)
	}{
		{name: "reads /etc/shadow", cmd: `cat /etc/shadow && echo ESCAPE:shadow; cat /etc/passwd && echo ESCAPE:passwd`},
		{name: "reads the data dir, the NATS store, another checkout", cmd: fmt.Sprintf(`cat %[1]s/token %[1]s/nats/jetstream/meta.inf %[1]s/git/worktrees/other/main.c; ls %[1]s && echo ESCAPE:datadir; ls %[2]s && echo ESCAPE:statedir`, secretDir, r.cfg.StateDir)},
		{name: "reads $HOME/.ssh", cmd: fmt.Sprintf(`ls -a %[1]s/.ssh %[1]s && echo ESCAPE:home; cat %[1]s/.ssh/* 2>/dev/null && echo ESCAPE:ssh; [ -S /nix/var/nix/daemon-socket/socket ] && echo ESCAPE:daemon; true`, home)},
		{name: "writes outside the checkout", cmd: fmt.Sprintf(`for p in /nix/store/ekaci-x /usr/ekaci-x /bin/ekaci-x %s/ekaci-x /etc/ekaci-x; do echo x > $p 2>/dev/null && echo ESCAPE:write $p; done; true`, secretDir),
			host: func(t *testing.T, o outcome) {
				for _, p := range []string{"/nix/store/ekaci-x", "/usr/ekaci-x", "/bin/ekaci-x", filepath.Join(secretDir, "ekaci-x"), "/etc/ekaci-x"} {
					if _, err := os.Stat(p); err == nil {
						os.Remove(p)
						t.Errorf("the check wrote %s on the host", p)
					}
				}
			}},
		{name: "connects to the host's loopback, no network", cmd: connect("127.0.0.1", "10.0.2.2")},
		{name: "connects to the host's loopback, network allowed", cmd: connect("127.0.0.1", "10.0.2.2"), network: true},
		{name: "resolves and reaches outside without network", cmd: outside},
		{name: "setuid binaries and privileges", cmd: `su -c 'echo ESCAPE:su' root 2>/dev/null; mount -t tmpfs none /build 2>/dev/null && echo ESCAPE:mount; unshare -r true 2>/dev/null && echo ESCAPE:userns; perl -e 'print "ESCAPE:uid0\n" if $< == 0 || $> == 0'; true`},
		{name: "TIOCSTI on the terminal", cmd: `perl -e 'if (open(my $t, "+<", "/dev/tty")) { print "ESCAPE:tty\n" if ioctl($t, 0x5412, "x") } print "ESCAPE:stdin\n" if ioctl(STDIN, 0x5412, "x")'`},
		{name: "a fork bomb", cmd: `f() { f | f & }; f; sleep 5`, want: LimitProcesses},
		{name: "a memory hog", cmd: `perl -e '$x = "a" x (1 << 20); $y .= $x for 1..2048; print length($y), "\n"'`, want: LimitMemory},
		{name: "an infinite loop", cmd: `while :; do :; done`, limits: short, want: LimitTimeout},
		{name: "1 GiB of output", cmd: `head -c 1073741824 /dev/zero`, want: LimitOutput,
			host: func(t *testing.T, o outcome) {
				if len(o.out) > int(lim.OutputBytes)+200 {
					t.Errorf("kept %d bytes of output, over the %d limit", len(o.out), lim.OutputBytes)
				}
			}},
		{name: "ignores SIGTERM", cmd: `trap '' TERM; while :; do :; done`, limits: short, want: LimitTimeout},
		{name: "leaves a daemon behind", cmd: `(setsid sh -c 'sleep 600' >/dev/null 2>&1 &); (nohup sleep 600 >/dev/null 2>&1 &); echo left`},
		{name: "writes a huge file", cmd: `dd if=/dev/zero of=big bs=1M count=64 2>/dev/null`, limits: tiny, want: LimitFiles},
		{name: "writes many files", cmd: `i=0; while [ $i -lt 1000 ]; do : > /tmp/f$i || break; i=$((i+1)); done`, limits: tiny, want: LimitFiles},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.network && !r.Network() {
				t.Fatal("slirp4netns is not installed (make test installs it)")
			}
			l := tc.limits
			if l == (Limits{}) {
				l = lim
			}
			httpHits.Store(0)
			natsBefore := natsConns()
			// RAN proves the check ran at all: a sandbox that cannot
			// start escapes nothing and proves nothing.
			o := run(t, r, Spec{Command: "echo RAN; " + tc.cmd, Network: tc.network, Limits: l})
			if !strings.HasPrefix(o.out, "RAN\n") {
				t.Errorf("the check did not run: %.300q", o.out)
			}
			if strings.Contains(o.out, "ESCAPE:") || strings.Contains(o.out, secret) {
				t.Errorf("escaped: %q", o.out)
			}
			if n := httpHits.Load(); n > 0 {
				t.Errorf("the host's loopback HTTP server was reached %d times", n)
			}
			if n := natsConns() - natsBefore; n > 0 {
				t.Errorf("the host's NATS server was connected to %d times", n)
			}
			want := tc.want
			if r.cg == nil && (want == LimitMemory || want == LimitProcesses) {
				// No cgroup to read the limit back from (a container's
				// cgroups are read-only): the rlimits bound it, and the
				// check fails rather than being reported as that limit
				// (TestRlimitsOnly).
				want = LimitNone
				if o.res.Limit == LimitTimeout || strings.Contains(o.out, "2147483648") {
					t.Errorf("not bounded by the rlimits: %v exit %d %.200q", o.res.Limit, o.res.ExitCode, o.out)
				}
			}
			if o.res.Limit != want {
				t.Errorf("limit = %v, want %v (exit %d, output %.300q)", o.res.Limit, want, o.res.ExitCode, o.out)
			}
			if tc.host != nil {
				tc.host(t, o)
			}
		})
	}
}

// TestNetworkWorks: with a network the check has one (slirp4netns's
// gateway answers DNS), so the refusal above is the loopback's, not a
// missing network.
func TestNetworkWorks(t *testing.T) {
	r := newRunner(t, nil)
	o := run(t, r, Spec{Command: `cat /etc/resolv.conf; ip -4 addr show tap0 2>/dev/null | grep -o 'inet [0-9.]*' || grep -c tap0 /proc/net/dev`, Network: true})
	if o.res.ExitCode != 0 || !strings.Contains(o.out, "10.0.2.3") || !(strings.Contains(o.out, "inet 10.0.2.") || strings.Contains(o.out, "1\n")) {
		t.Errorf("networked check = exit %d %q, want a tap0 and slirp's DNS", o.res.ExitCode, o.out)
	}
	o = run(t, r, Spec{Command: `grep -c tap0 /proc/net/dev`})
	if o.out != "0\n" {
		t.Errorf("check without network sees %q tap0 devices, want 0", o.out)
	}
}

// TestRlimitsOnly: without cgroups, memory and processes are still bounded
// (by rlimits); the check fails instead of being reported as a limit.
func TestRlimitsOnly(t *testing.T) {
	r := newRunner(t, func(c *Config) { c.NoCgroups = true })
	for _, tc := range []struct{ name, cmd string }{
		{"fork bomb", `f() { f | f & }; f; sleep 3; exit 0`},
		{"memory hog", `perl -e '$x = "a" x (1 << 20); $y .= $x for 1..2048; print length($y), "\n"'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := defaultLimits()
			lim.Timeout = 30 * time.Second
			o := run(t, r, Spec{Command: tc.cmd, Limits: lim})
			if o.res.Limit == LimitTimeout || strings.Contains(o.out, "2147483648") {
				t.Errorf("%s was not bounded by rlimits: %v exit %d %.200q", tc.name, o.res.Limit, o.res.ExitCode, o.out)
			}
		})
	}
}

// TestRunnerDeathKillsTheCheck: a cancelled run (the checker stopping)
// leaves nothing behind either.
func TestCancelledRunLeavesNothing(t *testing.T) {
	r := newRunner(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, Spec{Name: "c", Command: `sleep 600 & sleep 600`, Populate: files(nil), Limits: defaultLimits()})
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(r.Procs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(r.Procs()) == 0 {
		t.Fatal("the check never started")
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("a cancelled Run returned no error")
	}
	if left := r.Procs(); len(left) > 0 {
		t.Errorf("processes left after a cancelled run: %v", left)
	}
}

// TestMountProcRefusedOnAHost: --mount-proc never covers a host's /proc
// (the kernel's initial pid namespace), whatever asks for it; a
// container's pid namespace is another.
func TestMountProcRefusedOnAHost(t *testing.T) {
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if err := mountProcIn(initPidNS); !errors.Is(err, errHostProc) {
		t.Fatalf("mountProcIn(%s) = %v, want %v", initPidNS, err, errHostProc)
	}
	if err := mountProcIn(""); !errors.Is(err, errHostProc) {
		t.Fatalf("mountProcIn(unknown) = %v, want %v", err, errHostProc)
	}
	if ns := pidNamespace(); ns == initPidNS {
		// On a host (make test): NewRunner refuses as well.
		_, err := NewRunner(Config{StateDir: t.TempDir(), UIDBase: 64000, UIDs: 1, MountProc: true})
		if !errors.Is(err, errHostProc) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("NewRunner with MountProc on a host = %v, want %v (%v)", err, errHostProc, ErrUnavailable)
		}
		after, _ := os.ReadFile("/proc/self/mountinfo")
		if string(after) != string(before) {
			t.Fatal("the mounts changed")
		}
	}
}
