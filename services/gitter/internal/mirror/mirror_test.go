package mirror

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
	for _, tt := range []struct {
		rev  string
		want error
	}{
		{"0123456789012345678901234567890123456789", ErrUnknownCommit},
		{"no-branch", ErrBadCommit},
		{"--help", ErrBadCommit},
		{"0123456789ABCDEF012345678901234567890123", ErrBadCommit},
		{"../../../../etc", ErrBadCommit},
	} {
		if _, err := s.Worktree(ctx, src, tt.rev, ""); !errors.Is(err, tt.want) {
			t.Errorf("Worktree(%q): err = %v, want %v", tt.rev, err, tt.want)
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

// TestRemoveStaysInTheStore is finding 10 of the core review: a commit
// string that climbs out of worktrees/<repo>/ used to name the directory
// Remove deleted (the unresolvable commit was used as given).
func TestRemoveStaysInTheStore(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one")
	parent := t.TempDir()
	s, err := New(filepath.Join(parent, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(parent, "victim")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, commit, owner string }{
		{"commit climbs out", "../../../../../victim", "c0ffee"},
		{"commit climbs out without an owner", "../../../victim", ""},
		{"owner climbs out", commits[0], "../../../../victim/x"},
		{"absolute commit", victim, "c0ffee"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Remove(ctx, src, tt.commit, tt.owner)
			if err == nil {
				t.Errorf("Remove(%q, %q) was not refused", tt.commit, tt.owner)
			}
			if _, serr := os.Stat(filepath.Join(victim, "precious")); serr != nil {
				t.Fatalf("a directory outside the store was deleted (Remove: %v)", err)
			}
		})
	}
}

// gitServer answers every request with code, as a failing git HTTP
// server would.
func gitServer(t *testing.T, code int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, http.StatusText(code), code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/repo.git"
}

func TestPermanentAndTransientErrors(t *testing.T) {
	ctx := context.Background()
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String() + "/repo.git"
	}()
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		name, url string
		want      error
	}{
		{"missing local path", missing, ErrUnknownRepo},
		{"missing file URL", "file://" + missing, ErrUnknownRepo},
		{"HTTP 404", gitServer(t, http.StatusNotFound), ErrUnknownRepo},
		{"HTTP 403", gitServer(t, http.StatusForbidden), ErrUnknownRepo},
		{"HTTP 503", gitServer(t, http.StatusServiceUnavailable), ErrTransient},
		{"HTTP 500", gitServer(t, http.StatusInternalServerError), ErrTransient},
		{"connection refused", closed, ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Sync(ctx, tt.url)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Sync(%s): err = %v, want %v", tt.url, err, tt.want)
			}
			other := ErrTransient
			if tt.want == ErrTransient {
				other = ErrUnknownRepo
			}
			if errors.Is(err, other) {
				t.Fatalf("Sync(%s): err = %v is both", tt.url, err)
			}
		})
	}
}

// failingGit puts a git on PATH that fails the first n runs whose
// arguments include verb (clone or fetch) the way a DNS blip does, then
// runs the real git.
func failingGit(t *testing.T, verb string, n int) {
	t.Helper()
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := `#!/bin/sh
for a in "$@"; do
  if [ "$a" = "` + verb + `" ]; then
    n=$(cat "` + count + `" 2>/dev/null || echo 0)
    if [ "$n" -lt ` + strconv.Itoa(n) + ` ]; then
      echo $((n + 1)) > "` + count + `"
      echo "fatal: unable to access 'https://example.invalid/': Could not resolve host: example.invalid" >&2
      exit 128
    fi
  fi
done
exec "` + real + `" "$@"
`
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestTransientFetchThenSuccess(t *testing.T) {
	ctx := context.Background()
	src, commits := source(t, "one")
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	failingGit(t, "clone", 1)
	if _, err := s.Sync(ctx, src); !errors.Is(err, ErrTransient) || errors.Is(err, ErrUnknownRepo) {
		t.Fatalf("first clone: err = %v, want ErrTransient (not an unknown repository)", err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatalf("second clone: %v", err)
	}
	failingGit(t, "fetch", 1)
	if _, err := s.Sync(ctx, src); !errors.Is(err, ErrTransient) {
		t.Fatalf("first fetch: err = %v, want ErrTransient", err)
	}
	if _, err := s.Sync(ctx, src); err != nil {
		t.Fatalf("second fetch: %v", err)
	}
	if _, err := s.Worktree(ctx, src, commits[0], "c"); err != nil {
		t.Fatal(err)
	}
}
