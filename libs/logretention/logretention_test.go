package logretention

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// tree writes files (path relative to dir -> size and age) and sets their
// modification times; directories get their time last.
func tree(t *testing.T, dir string, files map[string]struct {
	size int
	age  time.Duration
}) {
	t.Helper()
	now := time.Now()
	for rel, f := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, f.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for rel, f := range files {
		at := now.Add(-f.age)
		if err := os.Chtimes(filepath.Join(dir, rel), at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// left lists the files under dir, relative, sorted.
func left(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			if d.IsDir() {
				rel += "/"
			}
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

type file = struct {
	size int
	age  time.Duration
}

const day = 24 * time.Hour

func TestSweep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    map[string]file
		open     []string // held open by this process during the sweep
		emptyOld []string // empty directories, made old
		maxAge   time.Duration
		maxBytes int64
		want     []string
	}{
		{
			name: "older than the max age go, the rest stay",
			files: map[string]file{
				"a/1.log.zst": {10, 40 * day}, "a/2.log.zst": {10, 2 * day},
				"b/1.log.zst": {10, 31 * day},
			},
			maxAge: 30 * day, maxBytes: 1 << 20,
			want: []string{"a/", "a/2.log.zst", "b/"},
		},
		{
			name: "over the byte budget: oldest first until it fits",
			files: map[string]file{
				"a/1.log.zst": {100, 5 * day}, "a/2.log.zst": {100, 4 * day},
				"b/1.log.zst": {100, 3 * day}, "c/1.log.zst": {100, time.Hour},
			},
			maxAge: 30 * day, maxBytes: 250,
			want: []string{"a/", "b/", "b/1.log.zst", "c/", "c/1.log.zst"},
		},
		{
			name: "a log held open is kept, however old and however far over budget",
			files: map[string]file{
				"a/1.log.zst": {100, 60 * day}, "b/1.log.zst": {100, 50 * day},
			},
			open:   []string{"a/1.log.zst"},
			maxAge: 30 * day, maxBytes: 10,
			want: []string{"a/", "a/1.log.zst", "b/"},
		},
		{
			name: "a log modified within the grace period is kept over budget",
			files: map[string]file{
				"a/1.log.zst": {100, time.Minute}, "b/1.log.zst": {100, 2 * day},
			},
			maxAge: 30 * day, maxBytes: 10,
			want: []string{"a/", "a/1.log.zst", "b/"},
		},
		{
			name: "only <drv>/*.log.zst is ours",
			files: map[string]file{
				"top.log.zst": {10, 90 * day}, "a/notes.txt": {10, 90 * day},
				"a/b/1.log.zst": {10, 90 * day}, "a/1.log.zst": {10, 90 * day},
			},
			maxAge: 30 * day, maxBytes: 1 << 20,
			want: []string{"a/", "a/b/", "a/b/1.log.zst", "a/notes.txt", "top.log.zst"},
		},
		{
			name:     "directories empty for the grace period go, fresh ones stay",
			files:    map[string]file{"new/1.log.zst": {10, 60 * day}},
			emptyOld: []string{"old"},
			maxAge:   30 * day, maxBytes: 1 << 20,
			// new/ was just emptied: it goes at the next sweep.
			want: []string{"new/"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tree(t, dir, tc.files)
			for _, rel := range tc.open {
				f, err := os.OpenFile(filepath.Join(dir, rel), os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
			}
			for _, rel := range tc.emptyOld {
				p := filepath.Join(dir, rel)
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				old := time.Now().Add(-day)
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
			j := New(Config{Dir: dir, MaxAge: tc.maxAge, MaxBytes: tc.maxBytes, Logger: zerolog.Nop()})
			res, err := j.Sweep()
			if err != nil {
				t.Fatal(err)
			}
			if got := left(t, dir); !slices.Equal(got, tc.want) {
				t.Fatalf("left %v, want %v (sweep %+v)", got, tc.want, res)
			}
			if res.Open != len(tc.open) {
				t.Fatalf("sweep counted %d open logs, want %d", res.Open, len(tc.open))
			}
		})
	}
}

// TestSweepWithoutProcDeletesNothing: when open files cannot be listed, no
// log is known not to be in use, so none goes.
func TestSweepWithoutProcDeletesNothing(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]file{"a/1.log.zst": {10, 90 * day}})
	j := New(Config{Dir: dir, Logger: zerolog.Nop(), procDir: filepath.Join(t.TempDir(), "no-proc")})
	if _, err := j.Sweep(); !errors.Is(err, ErrNoProc) {
		t.Fatalf("Sweep = %v, want ErrNoProc", err)
	}
	if got := left(t, dir); !slices.Equal(got, []string{"a/", "a/1.log.zst"}) {
		t.Fatalf("left %v", got)
	}
}

// TestRunSweepsAtStartAndStops: Run prunes at once (a process restarted
// daily still prunes) and returns nil when its context ends.
func TestRunSweepsAtStartAndStops(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]file{"a/1.log.zst": {10, 90 * day}, "a/2.log.zst": {10, day}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(Config{Dir: dir, Logger: zerolog.Nop()}).Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(left(t, dir), []string{"a/", "a/2.log.zst"}) {
		if time.Now().After(deadline) {
			t.Fatalf("not pruned at start: %v", left(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := New(Config{}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no log directory") {
		t.Fatalf("Run without a directory = %v", err)
	}
}
