package mirror

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.invalid"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// source makes a repository with one commit per content, returning it and
// the commit ids.
func source(t *testing.T, contents ...string) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "init", "-q", "-b", "main")
	var commits []string
	for _, c := range contents {
		commits = append(commits, commit(t, dir, c))
	}
	return dir, commits
}

func commit(t *testing.T, dir, content string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "add", "-A")
	run(t, dir, "commit", "-q", "-m", content)
	return run(t, dir, "rev-parse", "HEAD")
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMirrorAndWorktrees(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one", "two")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Sync(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := regexp.MatchString(`^src-[0-9a-f]{12}\.git$`, filepath.Base(m)); !ok {
		t.Fatalf("mirror dir %s is not a token of the URL", m)
	}
	for i, want := range []string{"one", "two"} {
		wt, err := s.Worktree(ctx, src, commits[i], "")
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(wt, "file")); got != want {
			t.Fatalf("worktree %s holds %q, want %q", wt, got, want)
		}
		again, err := s.Worktree(ctx, src, commits[i], "")
		if err != nil || again != wt {
			t.Fatalf("second Worktree = %q, %v; want %q", again, err, wt)
		}
	}
	// A new commit on the source is fetched by the next Sync.
	third := commit(t, src, "three")
	if _, err := s.Worktree(ctx, src, third, ""); !errors.Is(err, ErrUnknownCommit) {
		t.Fatalf("before fetch: err = %v, want ErrUnknownCommit", err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatal(err)
	}
	wt, err := s.Worktree(ctx, src, third, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(wt, "file")); got != "three" {
		t.Fatalf("after fetch: %q", got)
	}
	if sha, err := s.Resolve(ctx, src, "main"); err != nil || sha != third {
		t.Fatalf("Resolve(main) = %q, %v; want %s", sha, err, third)
	}
	if sha, err := s.Resolve(ctx, src, third[:10]); err != nil || sha != third {
		t.Fatalf("Resolve(short) = %q, %v", sha, err)
	}
	if err := s.Remove(ctx, src, third, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(wt); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed worktree still there: %v", err)
	}
	if err := s.Remove(ctx, src, third, ""); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestOwnersHaveTheirOwnWorktrees(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatal(err)
	}
	a, err := s.Worktree(ctx, src, commits[0], "change-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Worktree(ctx, src, commits[0], "change-b")
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("two owners share %s", a)
	}
	if err := s.Remove(ctx, src, commits[0], "change-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a's worktree survived its removal")
	}
	if read(t, filepath.Join(b, "file")) != "one" {
		t.Fatal("removing a's worktree disturbed b's")
	}
}

func TestFileURL(t *testing.T) {
	src, commits := source(t, "one")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	url := "file://" + src
	if _, err := s.Sync(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	wt, err := s.Worktree(context.Background(), url, commits[0], "")
	if err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(wt, "file")) != "one" {
		t.Fatal("wrong content")
	}
}

func TestUnknownRepoAndCommit(t *testing.T) {
	ctx := context.Background()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	_, err = s.Sync(ctx, missing)
	if !errors.Is(err, ErrUnknownRepo) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v, want ErrUnknownRepo with git's message", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.dir, "mirrors")); len(entries) != 0 {
		t.Fatalf("a failed clone left %v behind", entries)
	}
	src, _ := source(t, "one")
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"0123456789012345678901234567890123456789", "no-branch", "--help"} {
		if _, err := s.Worktree(ctx, src, rev, ""); !errors.Is(err, ErrUnknownCommit) {
			t.Errorf("Worktree(%q): err = %v, want ErrUnknownCommit", rev, err)
		}
	}
}

func TestRecoversAHalfMadeWorktree(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatal(err)
	}
	// What a crash between mkdir and checkout leaves: a directory that is
	// not a worktree.
	path := filepath.Join(s.dir, "worktrees", token(src), commits[0])
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "junk"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := s.Worktree(ctx, src, commits[0], "")
	if err != nil {
		t.Fatal(err)
	}
	if wt != path || read(t, filepath.Join(wt, "file")) != "one" {
		t.Fatalf("worktree %s not recovered", wt)
	}
	if _, err := os.Stat(filepath.Join(wt, "junk")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the half-made directory's junk survived")
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one", "two")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Sync(ctx, src); err != nil {
				errs <- err
				return
			}
			if _, err := s.Worktree(ctx, src, commits[i%2], ""); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
