// Package mirror keeps one bare mirror per repository (cloned once,
// fetched after) and a git worktree per commit under test, with the git
// CLI. Directory names are tokens derived from the URL, never the URL, and
// full commit ids, never a revision as given: nothing a request names can
// lead a path out of the store.
//
// Errors say whether retrying can help: ErrUnknownRepo and ErrUnknownCommit
// are git's word that the repository or commit does not exist (or may not
// be read), ErrBadCommit a commit that is not a full commit id; every other
// failure of git (a host that does not resolve, a refused connection, a
// server error, a full disk) is ErrTransient.
package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/ekaci/ekaci/libs/eventlog/text"
	"github.com/ekaci/ekaci/services/gitter/request"
)

var (
	// ErrUnknownRepo means git could not clone or fetch the repository.
	ErrUnknownRepo = errors.New("unknown repository")
	// ErrUnknownCommit means the mirror has no such commit.
	ErrUnknownCommit = errors.New("unknown commit")
	// ErrBadCommit means a commit is not a full commit id (40 or 64
	// lowercase hex digits).
	ErrBadCommit = errors.New("not a full commit id")
	// ErrTransient means git failed in a way a later try may not: the
	// network, the server, the local disk.
	ErrTransient = errors.New("transient git error")
)

// permanentRE matches git's messages for a repository that does not exist
// or may not be read (local paths, file://, HTTP 401/403/404, ssh keys,
// missing credentials): retrying cannot help. Anything else is transient.
var permanentRE = regexp.MustCompile(`(?i)does not exist|does not appear to be a git repository|` +
	`repository '[^']*' not found|repository not found|returned error: (401|403|404|410)|` +
	`authentication failed|could not read (username|password)|permission denied \(`)

// fetchError classifies a failed clone or fetch of url.
func fetchError(ctx context.Context, url string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if permanentRE.MatchString(err.Error()) {
		return fmt.Errorf("%w: %s: %w", ErrUnknownRepo, url, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrTransient, url, err)
}

// Store holds mirrors under dir/mirrors and worktrees under dir/worktrees.
type Store struct {
	dir   string
	mu    sync.Mutex
	repos map[string]*sync.Mutex
}

// New makes the store's directories.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"mirrors", "worktrees"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("git store: %w", err)
		}
	}
	return &Store{dir: abs, repos: map[string]*sync.Mutex{}}, nil
}

var unsafeRE = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// token names a repository's directories: a readable base name and a
// digest of the normalized URL.
func token(url string) string {
	sum := sha256.Sum256([]byte(url))
	base := strings.TrimSuffix(filepath.Base(strings.TrimRight(url, "/")), ".git")
	base = strings.Trim(unsafeRE.ReplaceAllString(base, "-"), "-.")
	if base == "" {
		base = "repo"
	}
	if len(base) > 40 {
		base = base[:40]
	}
	return base + "-" + hex.EncodeToString(sum[:])[:12]
}

// normalize makes local paths absolute; URLs pass unchanged.
func normalize(url string) (string, error) {
	if strings.Contains(url, "://") {
		return url, nil
	}
	if url == "" {
		return "", fmt.Errorf("%w: empty repository location", ErrUnknownRepo)
	}
	return filepath.Abs(url)
}

func (s *Store) lock(tok string) func() {
	s.mu.Lock()
	m := s.repos[tok]
	if m == nil {
		m = &sync.Mutex{}
		s.repos[tok] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (s *Store) mirrorDir(tok string) string { return filepath.Join(s.dir, "mirrors", tok+".git") }

// Sync clones the repository's mirror, or fetches into it, and returns
// the mirror's path.
func (s *Store) Sync(ctx context.Context, url string) (string, error) {
	return s.SyncWith(ctx, url, nil)
}

// SyncWith is Sync with extra environment for git's clone or fetch (see
// BearerEnv): credentials that reach git through its environment only,
// never its configuration on disk or its command line.
func (s *Store) SyncWith(ctx context.Context, url string, env []string) (string, error) {
	url, err := normalize(url)
	if err != nil {
		return "", err
	}
	tok := token(url)
	defer s.lock(tok)()
	dst := s.mirrorDir(tok)
	if _, err := os.Stat(filepath.Join(dst, "HEAD")); err == nil {
		if _, err := gitEnv(ctx, env, dst, "fetch", "--prune", "--quiet", "origin"); err != nil {
			return "", fetchError(ctx, url, err)
		}
		return dst, nil
	}
	// Clone next to the target and rename, so a crash never leaves a
	// half clone where a mirror is expected.
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".clone-"+tok+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := gitEnv(ctx, env, "", "clone", "--mirror", "--quiet", "--", url, tmp); err != nil {
		return "", fetchError(ctx, url, err)
	}
	os.RemoveAll(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("mirror %s: %w", url, err)
	}
	return dst, nil
}

// Resolve returns the full commit id of rev in the repository's mirror.
func (s *Store) Resolve(ctx context.Context, url, rev string) (string, error) {
	url, err := normalize(url)
	if err != nil {
		return "", err
	}
	return s.resolve(ctx, url, token(url), rev)
}

func (s *Store) resolve(ctx context.Context, url, tok, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") || rev == "" {
		return "", fmt.Errorf("%w: %q is not a revision", ErrUnknownCommit, rev)
	}
	out, err := git(ctx, s.mirrorDir(tok), "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	var gerr *gitError
	switch {
	case err == nil:
		return out, nil
	case ctx.Err() != nil:
		return "", ctx.Err()
	case errors.As(err, &gerr) && gerr.code == 1 && gerr.stderr == "":
		// --verify --quiet: exit 1 and silence is "no such commit".
		return "", fmt.Errorf("%w: %s is not a commit of %s", ErrUnknownCommit, rev, url)
	}
	return "", fmt.Errorf("%w: resolve %s in the mirror of %s: %w", ErrTransient, rev, url, err)
}

// Worktree checks out commit (a full commit id) of the (synced)
// repository in a worktree of its own and returns its absolute path. Asking
// again returns the same one. owner (e.g. a change id, a subject token; ""
// for none) gives each owner its own worktree, so one owner's Remove never
// pulls a checkout from under another.
func (s *Store) Worktree(ctx context.Context, url, commit, owner string) (string, error) {
	if err := checkNames(commit, owner); err != nil {
		return "", err
	}
	url, err := normalize(url)
	if err != nil {
		return "", err
	}
	tok := token(url)
	defer s.lock(tok)()
	sha, err := s.resolve(ctx, url, tok, commit)
	if err != nil {
		return "", err
	}
	path := s.worktreePath(tok, sha, owner)
	if head, err := git(ctx, path, "rev-parse", "HEAD"); err == nil && head == sha {
		if top, err := git(ctx, path, "rev-parse", "--show-toplevel"); err == nil && top == path {
			return path, nil
		}
	}
	// Left over from a crash mid-add, or damaged: start again.
	mirror := s.mirrorDir(tok)
	if err := os.RemoveAll(path); err != nil {
		return "", fmt.Errorf("worktree %s: %w", path, err)
	}
	if _, err := git(ctx, mirror, "worktree", "prune"); err != nil {
		return "", fmt.Errorf("worktree prune in %s: %w", mirror, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if _, err := git(ctx, mirror, "worktree", "add", "--detach", "--force", "--quiet", path, sha); err != nil {
		return "", fmt.Errorf("%w: worktree of %s at %s: %w", ErrTransient, url, sha, err)
	}
	return path, nil
}

var ownerRE = regexp.MustCompile(`^[A-Za-z0-9_-]{0,128}$`)

// checkNames refuses a commit or owner that could not safely name a
// worktree directory.
func checkNames(commit, owner string) error {
	if !request.IsCommit(commit) {
		return fmt.Errorf("%w: %s", ErrBadCommit, strconv.Quote(text.Bound(commit, 100)))
	}
	if !ownerRE.MatchString(owner) {
		return fmt.Errorf("worktree owner %s: want letters, digits, '-' and '_'", strconv.Quote(text.Bound(owner, 100)))
	}
	return nil
}

// worktreePath names owner's worktree of sha, a full commit id that
// checkNames or git vouched for.
func (s *Store) worktreePath(tok, sha, owner string) string {
	name := sha
	if owner != "" {
		name = owner + "-" + sha
	}
	return filepath.Join(s.dir, "worktrees", tok, name)
}

// Remove deletes owner's worktree of commit (a full commit id); an absent
// one is not an error. A commit that is not a full commit id is refused:
// it never named a worktree.
func (s *Store) Remove(ctx context.Context, url, commit, owner string) error {
	if err := checkNames(commit, owner); err != nil {
		return err
	}
	url, err := normalize(url)
	if err != nil {
		return err
	}
	tok := token(url)
	defer s.lock(tok)()
	mirror := s.mirrorDir(tok)
	// Worktree names the directory after what git resolved (a tag's id
	// resolves to its commit); a commit the mirror no longer knows keeps
	// its own id, which checkNames vetted: either way a full commit id.
	sha := commit
	if resolved, err := s.resolve(ctx, url, tok, commit); err == nil && request.IsCommit(resolved) {
		sha = resolved
	}
	path := s.worktreePath(tok, sha, owner)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := git(ctx, mirror, "worktree", "remove", "--force", path); err != nil {
		if rerr := os.RemoveAll(path); rerr != nil {
			return fmt.Errorf("remove worktree %s: %w", path, err)
		}
	}
	_, err = git(ctx, mirror, "worktree", "prune")
	return err
}

// git runs git in dir (none: the current directory) and returns its
// trimmed stdout, or an error carrying git's own message.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	return gitEnv(ctx, nil, dir, args...)
}

// TokenEnv is the environment that makes git send an installation token
// (HTTP basic auth as x-access-token, as GitHub documents) to the
// scheme://host/ of url, and nowhere else: git reads it as configuration
// from its environment (GIT_CONFIG_COUNT), so the token is never written
// to a git config, a remote URL or a command line.
func TokenEnv(url, token string) []string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok || token == "" {
		return nil
	}
	host, _, _ := strings.Cut(rest, "/")
	auth := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
	return []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http." + scheme + "://" + host + "/.extraHeader",
		"GIT_CONFIG_VALUE_0=Authorization: Basic " + auth}
}

func gitEnv(ctx context.Context, env []string, dir string, args ...string) (string, error) {
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(),
		"GIT_TERMINAL_PROMPT=0", // never wait for a password nobody will type
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_ASKPASS=/bin/false",
		"LC_ALL=C",
	)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		gerr := &gitError{stderr: strings.TrimSpace(stderr.String()), code: -1, err: err}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			gerr.code = exit.ExitCode()
		}
		return "", gerr
	}
	return strings.TrimSpace(string(out)), nil
}

// gitError is a failed git command: its exit code (-1 when it did not
// run) and its own message.
type gitError struct {
	stderr string
	code   int
	err    error
}

func (e *gitError) Error() string {
	if e.stderr == "" {
		return e.err.Error()
	}
	return e.stderr
}
