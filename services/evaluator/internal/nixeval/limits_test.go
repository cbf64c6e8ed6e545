package nixeval

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ekaci/ekaci/libs/nixtest"
)

// Review finding 7: trimError cut at byte 2000, in the middle of a rune,
// and the fact holding it could never be encoded.
func TestTrimErrorValidAndBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"two-byte runes over the bound", "error: " + strings.Repeat("é", 1500)},
		{"three-byte runes over the bound", "error: " + strings.Repeat("字", 1000)},
		{"invalid bytes", "error: \xff\xfe " + strings.Repeat("x", 10)},
		{"invalid bytes over the bound", "error: " + strings.Repeat("\xffé", 1500)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := trimError(tc.in)
			if !utf8.ValidString(got) {
				t.Errorf("not valid UTF-8: ...%q", got[max(len(got)-20, 0):])
			}
			if len(got) > maxError {
				t.Errorf("%d bytes, over %d", len(got), maxError)
			}
			if !strings.HasPrefix(got, "error: ") {
				t.Errorf("lost the message's start: %q", got[:min(len(got), 20)])
			}
		})
	}
}

func TestOutOfMemory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stderr string
		want   bool
	}{
		{"nix 2.8 under RLIMIT_AS", "GC Warning: Failed to expand heap by 800133120 bytes\nGC Warning: Out of Memory! Heap size: 384 MiB. Returning NULL!\nerror: out of memory\n", true},
		{"error line alone", "error: out of memory\n", true},
		{"coloured", "\x1b[31;1merror:\x1b[0m out of memory\n", true},
		{"bad_alloc", "error: std::bad_alloc\n", true},
		{"failed heap expansion only", "GC Warning: Failed to expand heap by 402653184 bytes\n", false},
		{"another error", "error: attribute 'x' missing\n", false},
		{"mentions memory in a message", "error: out of memory ideas\n", false},
	} {
		if got := outOfMemory(tc.stderr); got != tc.want {
			t.Errorf("%s: outOfMemory = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A job allocating without end is stopped by the memory limit and says so;
// the same job without a limit would take GiBs (measured: genList of 1e8
// needs over 800 MB for the list alone).
func TestMemoryLimit(t *testing.T) {
	nixtest.Require(t)
	dir := write(t, map[string]string{
		"big.nix":    `{ fine = derivation { name = "fine"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }; big = builtins.genList (x: x) 100000000; }`,
		"small.nix":  `{ fine = derivation { name = "fine"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }; }`,
		"thrown.nix": `{ a = throw "too big"; }`,
	})
	const limit = 1 << 30
	for _, tc := range []struct {
		name    string
		file    string
		limit   int64
		wantErr error
	}{
		{"over the limit", "big.nix", limit, ErrMemoryLimit},
		{"within the limit", "small.nix", limit, nil},
		// (A throw "out of memory" reads as the limit: Nix prints the same
		// line. The job can only misname its own failure that way.)
		{"a throw under the limit is the attribute's error", "thrown.nix", limit, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			attrs, err := Evaluate(context.Background(), Options{Dir: dir, File: tc.file, NixOptions: offline, MemoryLimit: tc.limit})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v (attrs %+v), want %v", err, attrs, tc.wantErr)
			}
			t.Logf("%s: %v in %v", tc.file, err, time.Since(start))
			if err == nil && len(attrs) == 0 {
				t.Fatal("no attributes")
			}
		})
	}
}

// A job that loops (not a recursion Nix detects: ~1e10 additions, hours)
// is stopped at the context's deadline, with the whole process tree:
// also a builder of an import-from-derivation, which Nix runs in a process
// group of its own.
func TestTimeLimitKillsTheTree(t *testing.T) {
	nixtest.Require(t)
	marker := fmt.Sprintf("ekaci-eval-timeout-%d", time.Now().UnixNano())
	dir := write(t, map[string]string{
		"loop.nix": `{ a = builtins.foldl' (a: i: builtins.foldl' (b: j: b + j) a (builtins.genList (x: x) 10000)) 0 (builtins.genList (x: x) 1000000); }`,
		// The builder sleeps under a name the test can find.
		"ifd.nix": `{ a = import (derivation { name = "ifd"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "while :; do :; done # ` + marker + `" ]; }); }`,
	})
	for _, file := range []string{"loop.nix", "ifd.nix"} {
		t.Run(file, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Evaluate(ctx, Options{Dir: dir, File: file, NixOptions: offline})
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v after %v, want the deadline", err, took)
			}
			if took > 15*time.Second {
				t.Fatalf("stopped after %v; the deadline was 3 s", took)
			}
			if file == "ifd.nix" {
				// Killed processes take a moment to leave /proc.
				deadline := time.Now().Add(5 * time.Second)
				for len(processesNamed(marker)) > 0 && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if pids := processesNamed(marker); len(pids) > 0 {
					for _, p := range pids {
						_ = syscall.Kill(p, syscall.SIGKILL)
					}
					t.Fatalf("the import-from-derivation builder outlived the evaluation: pids %v", pids)
				}
			}
		})
	}
}

// processesNamed lists the processes whose command line holds name.
func processesNamed(name string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), name) {
			pids = append(pids, pid)
		}
	}
	return pids
}
