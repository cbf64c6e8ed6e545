package nixbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ekaci/ekaci/libs/nixtest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

var noSubst = []string{"substituters", ""}

func needNix(t *testing.T) {
	t.Helper()
	nixtest.Require(t) // fails, never skips: `make test` installs Nix
}

// instantiate writes a derivation running script with /bin/sh and returns
// its .drv path and a marker that is unique to this test run. The marker is
// an attribute, so it is in the environment of every builder process,
// which is how markerProcs finds them.
func instantiate(t *testing.T, script string) (drvPath, marker string) {
	t.Helper()
	return instantiateWith(t, script, "")
}

// instantiateWith is instantiate with extra attributes (Nix source).
func instantiateWith(t *testing.T, script, extra string) (drvPath, marker string) {
	t.Helper()
	needNix(t)
	marker = fmt.Sprintf("nixbuild-%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano())
	expr := fmt.Sprintf(`derivation {
  name = "nixbuild-test";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  marker = %q;
  args = [ "-c" %q ];
  %s
}
`, marker, script, extra)
	f := filepath.Join(t.TempDir(), "drv.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", f).Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v %s", err, exitStderr(err))
	}
	p, _, _ := strings.Cut(strings.TrimSpace(string(out)), "!")
	return p, marker
}

// sharedDir is a directory builders can write to: they run as Nix's build
// users, and t.TempDir is private to root.
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nixbuild-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

type proc struct{ pid, ppid, pgrp int }

// markerProcs lists live (non-zombie) processes whose environment carries
// marker.
func markerProcs(marker string) []proc {
	want := []byte("marker=" + marker + "\x00")
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		st, ok := readStat(pid)
		if !ok || st.state == 'Z' || st.state == 'X' {
			continue
		}
		ps = append(ps, proc{pid, st.ppid, st.pgrp})
	}
	return ps
}

// assertGone polls until no process carries marker; signals are delivered
// asynchronously, so "gone" may lag Build's return by a moment.
func assertGone(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ps := markerProcs(marker)
		if len(ps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range ps {
				_ = syscall.Kill(-p.pgrp, syscall.SIGKILL) // do not leak into later tests
			}
			t.Fatalf("builder processes still alive after Build returned: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines collects OnLine calls.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (c *lines) add(b []byte) {
	c.mu.Lock()
	c.l = append(c.l, string(b))
	c.mu.Unlock()
}

func (c *lines) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.l)
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	rc, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	return string(b)
}

func TestBuildSucceeds(t *testing.T) {
	t.Parallel()
	drv, _ := instantiate(t, "echo line-one; echo line-two >&2; echo line-three; mkdir $out; echo ok > $out/f")
	logPath := filepath.Join(t.TempDir(), "logs", "drv-id", "1.log.zst")
	var got lines
	res, err := Build(context.Background(), drv, Options{NixOptions: noSubst, LogPath: logPath, OnLine: got.add, TailLines: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Succeeded || res.ExitCode != 0 || res.Interruption != None || res.LogErr != nil || res.Invocations != 1 {
		t.Fatalf("result = %+v, want succeeded", res)
	}
	out, err := exec.Command("nix-store", "-q", "--outputs", drv).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Fields(string(out)); !slices.Equal(res.OutPaths, want) {
		t.Fatalf("OutPaths = %q, want %q", res.OutPaths, want)
	}
	if b, err := os.ReadFile(filepath.Join(res.OutPaths[0], "f")); err != nil || string(b) != "ok\n" {
		t.Fatalf("output file: %q, %v", b, err)
	}

	l := got.get()
	var builderLines []string
	for _, s := range l {
		if strings.HasPrefix(s, "line-") {
			builderLines = append(builderLines, s)
		}
	}
	if want := []string{"line-one", "line-two", "line-three"}; !slices.Equal(builderLines, want) {
		t.Fatalf("builder lines via OnLine = %q, want %q (all: %q)", builderLines, want, l)
	}
	if l[0] != "building '"+drv+"'" {
		t.Fatalf("first line = %q, want Nix's start of the build", l[0])
	}
	if log := readLog(t, logPath); log != strings.Join(l, "\n")+"\n" {
		t.Fatalf("log = %q, want every OnLine line in order %q", log, l)
	}
	if want := strings.Join(l[len(l)-2:], "\n"); res.Tail != want {
		t.Fatalf("Tail = %q, want %q", res.Tail, want)
	}

	// Already built: the store says so, and Nix is not even started.
	var again lines
	res2, err := Build(context.Background(), drv, Options{NixOptions: noSubst, LogPath: logPath, OnLine: again.add})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Outcome != Succeeded || !slices.Equal(res2.OutPaths, res.OutPaths) || res2.Invocations != 0 {
		t.Fatalf("rebuild result = %+v", res2)
	}
	if log := readLog(t, logPath); log != "" {
		t.Fatalf("second log = %q, want it replaced by an empty one", log)
	}
}

func TestBuildFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   string
		wantCode int
		wantTail string
	}{
		{name: "exit 1", script: "echo about-to-fail; exit 1", wantCode: 100, wantTail: "failed with exit code 1"},
		// Nix 2.8 counts a missing output as a plain error (1), not a
		// failed build (100).
		{name: "no output", script: "echo built nothing", wantCode: 1, wantTail: "failed to produce output path"},
		// Not UTF-8: Latin-1 "café" and a stray byte.
		{name: "not utf-8", script: `printf 'caf\351 \377 end\n'; exit 1`, wantCode: 100, wantTail: "caf\uFFFD \uFFFD end"},
		{name: "killed by a signal", script: "echo started; kill -9 $$", wantCode: 100, wantTail: "signal 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			drv, _ := instantiate(t, tt.script)
			logPath := filepath.Join(t.TempDir(), "x.log.zst")
			res, err := Build(context.Background(), drv, Options{NixOptions: noSubst, LogPath: logPath})
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != Failed || res.ExitCode != tt.wantCode || res.Interruption != None || res.OutPaths != nil {
				t.Fatalf("result = %+v, want failed with exit code %d", res, tt.wantCode)
			}
			if !strings.Contains(res.Tail, tt.wantTail) {
				t.Fatalf("Tail = %q, want it to mention %q", res.Tail, tt.wantTail)
			}
			if !utf8.ValidString(res.Tail) {
				t.Fatalf("Tail = %q is not UTF-8", res.Tail)
			}
			if log := readLog(t, logPath); !strings.HasSuffix(strings.ToValidUTF8(log, "\uFFFD"), res.Tail+"\n") {
				t.Fatalf("log = %q does not end with the tail %q", log, res.Tail)
			}
		})
	}
}

func TestInterrupted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		script      string
		opts        Options
		cancelOnRun bool // cancel the context once the builder runs
		want        Interruption
		wantCode    int
		wantDetail  string
		minDur      time.Duration
		maxDur      time.Duration
	}{
		{
			name:   "no output timeout",
			script: "echo started; sleep 300; echo never",
			opts:   Options{NoOutputTimeout: time.Second},
			// As below: our reading of the start may lag Nix's.
			want: Timeout, wantCode: 101, minDur: 500 * time.Millisecond, maxDur: 4 * time.Second,
			wantDetail: "no output for 1s",
		},
		{
			// Output keeps flowing, so only the total timeout can end it;
			// a silence timer that failed to reset would stop it at ~1s.
			name:   "total timeout",
			script: "echo started; while true; do echo tick; sleep 0.1; done",
			opts:   Options{NoOutputTimeout: time.Second, TotalTimeout: 3 * time.Second},
			want:   Timeout, wantCode: 101, minDur: 2500 * time.Millisecond, maxDur: 6 * time.Second,
			wantDetail: "still running after 3s",
		},
		{
			name:        "cancelled",
			script:      "echo started; sleep 300",
			cancelOnRun: true,
			want:        Cancelled, wantCode: -1, maxDur: 3 * time.Second,
			wantDetail: "cancelled",
		},
		{
			name:   "nix max-silent-time",
			script: "echo started; sleep 300",
			opts:   Options{NixOptions: []string{"max-silent-time", "1"}},
			// Nix counts its second from the build's start as it sees it; we
			// read that start a little later (under load 31, 3 ms later: 997
			// ms measured), so the floor only rules out an immediate stop.
			want: Timeout, wantCode: 101, minDur: 500 * time.Millisecond, maxDur: 4 * time.Second,
			wantDetail: "Nix's own timeout",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			drv, marker := instantiate(t, tt.script)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got lines
			var seen atomic.Int32 // builder processes alive when "started" came
			o := tt.opts
			o.NixOptions = append(slices.Clone(noSubst), o.NixOptions...)
			o.LogPath = filepath.Join(t.TempDir(), "x.log.zst")
			o.OnLine = func(l []byte) {
				got.add(l)
				if string(l) == "started" {
					seen.Store(int32(len(markerProcs(marker))))
					if tt.cancelOnRun {
						cancel()
					}
				}
			}
			res, err := Build(ctx, drv, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != Interrupted || res.Interruption != tt.want || res.ExitCode != tt.wantCode {
				t.Fatalf("result = %+v, want interrupted/%v with exit code %d", res, tt.want, tt.wantCode)
			}
			if !strings.Contains(res.Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", res.Detail, tt.wantDetail)
			}
			if res.Duration < tt.minDur || res.Duration > tt.maxDur {
				t.Fatalf("took %v, want between %v and %v", res.Duration, tt.minDur, tt.maxDur)
			}
			if seen.Load() == 0 {
				t.Fatalf("no builder process found while it ran; the gone-check below would prove nothing (lines %q)", got.get())
			}
			assertGone(t, marker)
			if log := readLog(t, o.LogPath); !strings.Contains(log, "\nstarted\n") {
				t.Fatalf("log = %q, want the builder's output", log)
			}
			if tt.name == "total timeout" {
				if n := strings.Count(strings.Join(got.get(), "\n"), "tick"); n < 10 {
					t.Fatalf("only %d ticks seen", n)
				}
			}
		})
	}
}

func TestLongLine(t *testing.T) {
	t.Parallel()
	const n = 3*MaxLineBytes + 1234
	drv, _ := instantiate(t, fmt.Sprintf("echo before; head -c %d /dev/zero | tr '\\0' a; echo; echo after; exit 1", n))
	logPath := filepath.Join(t.TempDir(), "x.log.zst")
	var got lines
	res, err := Build(context.Background(), drv, Options{NixOptions: noSubst, LogPath: logPath, OnLine: got.add})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Failed {
		t.Fatalf("result = %+v", res)
	}
	long := strings.Repeat("a", n)
	if log := readLog(t, logPath); !strings.Contains(log, "\nbefore\n"+long+"\nafter\n") {
		t.Fatalf("log (%d bytes) does not hold the long line whole", len(log))
	}
	l := got.get()
	i, j := slices.Index(l, "before"), slices.Index(l, "after")
	if i < 0 || j < 0 {
		t.Fatalf("lines %d, before at %d, after at %d", len(l), i, j)
	}
	pieces := l[i+1 : j]
	for _, p := range pieces {
		if len(p) > MaxLineBytes {
			t.Fatalf("piece of %d bytes exceeds MaxLineBytes", len(p))
		}
	}
	if strings.Join(pieces, "") != long || len(pieces) != 4 {
		t.Fatalf("got %d pieces, want 4 that make up the line", len(pieces))
	}
}

// TestUnsolicitedKills covers deaths we did not cause, with the kernel's
// OOM counter replaced. Not parallel: it swaps package variables.
func TestUnsolicitedKills(t *testing.T) {
	needNix(t)
	rising := func() (uint64, bool) { return uint64(time.Now().UnixNano()), true }
	flat := func() (uint64, bool) { return 7, true }
	unknown := func() (uint64, bool) { return 0, false }
	tests := []struct {
		name      string
		script    string
		counter   func() (uint64, bool)
		signal    syscall.Signal // sent to nix-build once the builder runs; 0: none
		want      Outcome
		wantWhy   Interruption
		wantCode  int
		wantOrphs bool // builder outlives nix-build, so Build must reap its group
	}{
		// A builder's death is its build's failure: which signal killed it
		// Nix says only in words, and words decide nothing.
		{name: "builder SIGKILL during OOM", script: "echo started; kill -9 $$", counter: rising,
			want: Failed, wantWhy: None, wantCode: 100},
		{name: "nix-build SIGKILL during OOM", script: "echo started; sleep 300", counter: rising, signal: syscall.SIGKILL,
			want: Interrupted, wantWhy: OutOfMemory, wantCode: -1, wantOrphs: true},
		{name: "nix-build SIGKILL without OOM", script: "echo started; sleep 300", counter: flat, signal: syscall.SIGKILL,
			want: Interrupted, wantWhy: ProcessDeath, wantCode: -1, wantOrphs: true},
		{name: "nix-build SIGKILL, counter unreadable", script: "echo started; sleep 300", counter: unknown, signal: syscall.SIGKILL,
			want: Interrupted, wantWhy: OutOfMemory, wantCode: -1, wantOrphs: true},
		// Nix turns a SIGTERM from outside into exit status 1 mid-build,
		// moving no counter: not the derivation's failure, so it is built
		// again (alone), and this time it succeeds.
		{name: "nix-build SIGTERM from elsewhere", script: "if [ -e MARK ]; then echo again; echo ok > $out; else touch MARK; echo started; sleep 300; fi",
			counter: rising, signal: syscall.SIGTERM, want: Succeeded, wantWhy: None, wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oomKillCount = tt.counter
			snapshots := make(chan []int, 100)
			testHookSnapshot = func(g []int) {
				select {
				case snapshots <- g:
				default:
				}
			}
			t.Cleanup(func() { oomKillCount, testHookSnapshot = readVMStatOOMKills, nil })

			drv, marker := instantiate(t, strings.ReplaceAll(tt.script, "MARK", filepath.Join(sharedDir(t), "mark")))
			killed := make(chan error, 1)
			o := Options{NixOptions: noSubst, KillGrace: time.Second}
			o.OnLine = func(l []byte) {
				if string(l) != "started" || tt.signal == 0 {
					return
				}
				go func() { killed <- killNixBuild(marker, tt.signal, snapshots) }()
			}
			res, err := Build(context.Background(), drv, o)
			if err != nil {
				t.Fatal(err)
			}
			if tt.signal != 0 {
				if err := <-killed; err != nil {
					t.Fatal(err)
				}
			}
			if res.Outcome != tt.want || res.Interruption != tt.wantWhy || res.ExitCode != tt.wantCode {
				t.Fatalf("result = %+v, want %v/%v with exit code %d", res, tt.want, tt.wantWhy, tt.wantCode)
			}
			if tt.signal == syscall.SIGTERM && res.Invocations != 2 {
				t.Fatalf("built in %d invocations, want 2 (the one stopped from outside, then one that judged it)", res.Invocations)
			}
			assertGone(t, marker)
		})
	}
}

// killNixBuild finds the builder by its marker, waits until Build has seen
// the builder's process group, then sends sig to nix-build (the builder's
// parent), as the OOM killer or an operator would.
func killNixBuild(marker string, sig syscall.Signal, snapshots <-chan []int) error {
	deadline := time.After(5 * time.Second)
	var builder proc
	for {
		ps := markerProcs(marker)
		for _, p := range ps {
			if p.pid == p.pgrp {
				builder = p
			}
		}
		if builder.pid != 0 {
			break
		}
		select {
		case <-deadline:
			return errors.New("builder process not found")
		case <-time.After(10 * time.Millisecond):
		}
	}
	for {
		select {
		case g := <-snapshots:
			if slices.Contains(g, builder.pgrp) {
				return syscall.Kill(builder.ppid, sig)
			}
		case <-deadline:
			return errors.New("Build never saw the builder's process group")
		}
	}
}

func TestBuildDoesNotStart(t *testing.T) {
	needNix(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		drv     string
		opts    Options
		path    string // PATH for the run; empty keeps it
		wantErr error
	}{
		{name: "odd nix options", drv: "/nix/store/x.drv", opts: Options{NixOptions: []string{"substituters"}}, wantErr: ErrBadOptions},
		{name: "option-like drv", drv: "--help", wantErr: ErrBadOptions},
		{name: "no nix-store", drv: "/nix/store/x.drv", path: t.TempDir(), wantErr: ErrNoNix},
		{name: "log not creatable", drv: "/nix/store/x.drv", opts: Options{LogPath: filepath.Join(file, "x.log.zst")}, wantErr: syscall.ENOTDIR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			}
			_, err := Build(context.Background(), tt.drv, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	drv, _ := instantiate(t, "echo should-not-run; exit 1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	logPath := filepath.Join(t.TempDir(), "x.log.zst")
	res, err := Build(ctx, drv, Options{NixOptions: noSubst, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Interrupted || res.Interruption != Cancelled {
		t.Fatalf("result = %+v", res)
	}
	if log := readLog(t, logPath); log != "" {
		t.Fatalf("log = %q, want empty", log)
	}
}

// BenchmarkAlreadyBuilt measures Build's overhead over a bare nix-build
// run on a derivation whose output is already valid.
func BenchmarkAlreadyBuilt(b *testing.B) {
	nixtest.Require(b)
	f := filepath.Join(b.TempDir(), "drv.nix")
	expr := fmt.Sprintf(`derivation { name = "nixbuild-bench"; system = builtins.currentSystem; builder = "/bin/sh"; marker = "%d"; args = [ "-c" "echo hi > $out" ]; }`, time.Now().UnixNano())
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("nix-instantiate", "--option", "substituters", "", f).Output()
	if err != nil {
		b.Fatal(err)
	}
	drv := strings.TrimSpace(string(out))
	if res, err := Build(context.Background(), drv, Options{NixOptions: noSubst}); err != nil || res.Outcome != Succeeded {
		b.Fatalf("first build: %+v %v", res, err)
	}
	logPath := filepath.Join(b.TempDir(), "x.log.zst")
	b.Run("Build", func(b *testing.B) {
		for b.Loop() {
			res, err := Build(context.Background(), drv, Options{NixOptions: noSubst, LogPath: logPath, OnLine: func([]byte) {}})
			if err != nil || res.Outcome != Succeeded {
				b.Fatalf("%+v %v", res, err)
			}
		}
	})
	b.Run("exec nix-build", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("nix-build", drv, "--no-out-link", "--builders", "", "--option", "substituters", "").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
