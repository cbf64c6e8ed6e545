package gitter

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io/fs"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubtest"
)

// privateRemote serves a bare repository over HTTPS with git's own
// smart-HTTP server (git http-backend), answering only requests that carry
// a live installation token of the fake GitHub as GitHub wants it (basic
// auth, user x-access-token).
type privateRemote struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // installation tokens presented
}

func newPrivateRemote(t *testing.T, gh *githubtest.Server, src string) *privateRemote {
	t.Helper()
	root := t.TempDir()
	bare := filepath.Join(root, "octo", "private.git")
	git(t, root, "clone", "-q", "--bare", src, bare)
	p := &privateRemote{}
	backend := &cgi.Handler{Path: "/usr/lib/git-core/git-http-backend",
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, tok, ok := r.BasicAuth()
		if ok {
			p.mu.Lock()
			p.seen = append(p.seen, tok)
			p.mu.Unlock()
		}
		if _, live := gh.TokenInstallation(tok); !ok || user != "x-access-token" || !live {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	// git trusts the test server's certificate through its environment.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(ca, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(p.srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSL_CAINFO", ca)
	return p
}

func (p *privateRemote) tokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// TestPrivateCheckoutWithInstallationToken: a change from a GitHub App
// installation is fetched over HTTPS with the installation's token, which
// reaches no file, git config, log line or event.
func TestPrivateCheckoutWithInstallationToken(t *testing.T) {
	gh := githubtest.New(t)
	gh.Install(11, "octo/private")
	app, err := githubapp.New(githubapp.Config{AppID: gh.AppID, PrivateKey: gh.PrivateKeyPEM(), BaseURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	src, commit := repo(t)
	remote := newPrivateRemote(t, gh, src)
	url := remote.srv.URL + "/octo/private.git"

	e := setup(t)
	var logs bytes.Buffer
	e.cfg.Logger = zerolog.New(&logs).Level(zerolog.DebugLevel)
	e.cfg.Tokens = app
	stop := e.start(t)
	defer stop()

	withToken := e.request(t, &eventsv1.ChangeRequested{RepoUrl: url, HeadCommit: commit, Source: "webhook",
		Github: &eventsv1.GitHubOrigin{InstallationId: 11, Owner: "octo", Repo: "private"}})
	if ev := e.wait(t, withToken, "checked_out", "checkout_failed"); ev.GetChangeCheckedOut() == nil {
		t.Fatalf("checkout with the installation's token: %v", ev)
	}
	// Without an installation there is no token: git is refused, and the
	// checkout fails for good rather than being retried.
	noToken := e.request(t, &eventsv1.ChangeRequested{RepoUrl: remote.srv.URL + "/octo/private.git?again", HeadCommit: commit, Source: "cli"})
	if ev := e.wait(t, noToken, "checked_out", "checkout_failed"); !strings.Contains(ev.GetChangeCheckoutFailed().GetError(), "could not read Username") {
		t.Fatalf("checkout without a token: %v, want checkout_failed for lack of credentials", ev)
	}
	stop()

	toks := remote.tokens()
	if len(toks) == 0 {
		t.Fatal("git presented no token")
	}
	token := toks[0]
	if inst, ok := gh.TokenInstallation(token); !ok || inst != 11 {
		t.Fatalf("git presented a token of installation %d (live %v), want 11", inst, ok)
	}
	leaks := []string{token, base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))}
	// Not on disk: the git store (mirrors, worktrees, configs).
	err = filepath.WalkDir(e.cfg.GitDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, l := range leaks {
			if bytes.Contains(b, []byte(l)) {
				t.Errorf("the token is in %s", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not in a log line.
	for _, l := range leaks {
		if strings.Contains(logs.String(), l) {
			t.Error("the token is in the gitter's log")
		}
	}
	// Not in an event.
	err = e.log.Read(e.ctx, 0, nil, func(r eventlog.Record) error {
		for _, l := range leaks {
			if strings.Contains(r.Event.String(), l) {
				t.Errorf("the token is in event %s", r.Event.GetId())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCloneURLsMapToAnotherPlace(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    map[string]string
		in   string
		want string
	}{
		{"no map", nil, "https://github.com/o/r.git", "https://github.com/o/r.git"},
		{"mapped", map[string]string{"https://github.com/o/": "/srv/repos/"}, "https://github.com/o/r.git", "/srv/repos/r.git"},
		{"longest prefix wins", map[string]string{"https://github.com/": "/a/", "https://github.com/o/r.git": "/b/r"}, "https://github.com/o/r.git", "/b/r"},
		{"other host untouched", map[string]string{"https://github.com/": "/a/"}, "https://example.com/o/r.git", "https://example.com/o/r.git"},
	} {
		if got := (Config{CloneURLs: tt.m}).fetchURL(tt.in); got != tt.want {
			t.Errorf("%s: fetchURL(%s) = %s, want %s", tt.name, tt.in, got, tt.want)
		}
	}
}
