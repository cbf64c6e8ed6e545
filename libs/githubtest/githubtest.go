// Package githubtest is a local GitHub API for tests: an httptest server
// that checks what a GitHub App client sends the way GitHub does, and
// records what it was asked to do.
//
// It promises:
//   - App authentication is real: the JWT of POST
//     /app/installations/{id}/access_tokens must be RS256-signed by the
//     App's private key (checked against its public key), name the App as
//     its issuer and be within GitHub's time limits (issued at most 60 s
//     in the future, at most 10 minutes long, not expired).
//   - Installation tokens expire (TokenTTL, one hour by default) and only
//     reach the repositories of their installation; every other call must
//     carry a live one.
//   - Check runs are validated against GitHub's limits (name, status and
//     conclusion values, summary and text ≤ 65,535 characters, ≤ 50
//     annotations a request, ≤ 1,000 check runs of one name on a commit)
//     and every create and update is recorded with its body.
//   - Faults on demand: a rate limit (403 with X-RateLimit-Remaining 0 and
//     X-RateLimit-Reset) and server errors, with or without Retry-After.
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running fake GitHub API.
type Server struct {
	// URL is the API's base URL (no trailing slash): go-github's BaseURL
	// is URL+"/", ghinstallation's BaseURL is URL.
	URL   string
	AppID int64
	// Key is the App's private key; PrivateKeyPEM is its PEM form.
	Key *rsa.PrivateKey

	srv *httptest.Server
	now func() time.Time

	mu            sync.Mutex
	tokenTTL      time.Duration
	installations map[int64]*installation
	tokens        map[string]token
	tokensIssued  int
	faults        []Fault
	checkRuns     []*CheckRun
	calls         []Call
	permissions   map[string]string // "owner/repo user" -> admin, write, read, none
	refused       []string
}

type installation struct {
	repos map[string]bool // "owner/repo"
}

type token struct {
	installation int64
	expires      time.Time
}

// CheckRun is a check run as the fake holds it now.
type CheckRun struct {
	ID          int64
	Repo        string // owner/repo
	Name        string
	HeadSHA     string
	Status      string
	Conclusion  string
	ExternalID  string
	DetailsURL  string
	Title       string
	Summary     string
	Text        string
	Annotations int
	Actions     []Action
}

// Action is a requested action button of a check run.
type Action struct {
	Label       string `json:"label"`
	Description string `json:"description"`
	Identifier  string `json:"identifier"`
}

// Call is one recorded create or update of a check run.
type Call struct {
	Method string // POST (create) or PATCH (update)
	Path   string
	RunID  int64
	Body   map[string]any
}

// Fault is an answer the server gives instead of handling a request.
type Fault struct {
	// Status is the answer's status: 403 with RateLimitReset set is a
	// rate limit, 5xx a server error.
	Status int
	// RetryAfter, when non-zero, is sent as Retry-After (seconds).
	RetryAfter time.Duration
	// RateLimitReset, when set, makes the answer a primary rate limit:
	// X-RateLimit-Remaining 0 and X-RateLimit-Reset this time.
	RateLimitReset time.Time
	// Path, when set, limits the fault to requests whose path contains it.
	Path string
}

// New starts a fake GitHub API for an App with a fresh 2048-bit key; it
// is closed when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("githubtest: generate the App key: %v", err)
	}
	s := &Server{AppID: 4242, Key: key, now: time.Now, tokenTTL: time.Hour,
		installations: map[int64]*installation{}, tokens: map[string]token{}, permissions: map[string]string{}}
	s.srv = httptest.NewServer(s.mux())
	s.URL = s.srv.URL
	tb.Cleanup(s.srv.Close)
	return s
}

// PrivateKeyPEM is the App's private key as GitHub hands it out (PKCS#1 PEM).
func (s *Server) PrivateKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s.Key)})
}

// Install makes an installation that may see repos ("owner/repo").
func (s *Server) Install(id int64, repos ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := &installation{repos: map[string]bool{}}
	for _, r := range repos {
		in.repos[r] = true
	}
	s.installations[id] = in
}

// Uninstall removes an installation: its tokens stop working.
func (s *Server) Uninstall(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.installations, id)
}

// SetTokenTTL sets how long the next installation tokens live.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenTTL = d
}

// SetPermission sets user's permission on repo: admin, maintain, write,
// triage, read or none (the default).
func (s *Server) SetPermission(repo, user, permission string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.permissions[repo+" "+user] = permission
}

// Inject queues faults: each answers one matching request, in order.
func (s *Server) Inject(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// FaultsLeft counts the injected faults not yet served.
func (s *Server) FaultsLeft() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// TokensIssued counts the installation tokens issued so far.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

// TokenInstallation returns the installation of a live token.
func (s *Server) TokenInstallation(tok string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tok]
	if !ok || !s.now().Before(t.expires) {
		return 0, false
	}
	_, installed := s.installations[t.installation]
	return t.installation, installed
}

// CheckRuns returns a copy of every check run, in creation order.
func (s *Server) CheckRuns() []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CheckRun, len(s.checkRuns))
	for i, c := range s.checkRuns {
		out[i] = *c
		out[i].Actions = append([]Action(nil), c.Actions...)
	}
	return out
}

// Calls returns every recorded check-run create and update, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Refused lists why requests were refused (authentication, validation),
// in order: a test reads it to say what its client got wrong.
func (s *Server) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

func (s *Server) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /app/installations/{id}/access_tokens", s.accessToken)
	m.HandleFunc("POST /repos/{owner}/{repo}/check-runs", s.repo(s.createCheckRun))
	m.HandleFunc("PATCH /repos/{owner}/{repo}/check-runs/{id}", s.repo(s.updateCheckRun))
	m.HandleFunc("GET /repos/{owner}/{repo}/check-runs/{id}", s.repo(s.getCheckRun))
	m.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref}/check-runs", s.repo(s.listCheckRuns))
	m.HandleFunc("GET /repos/{owner}/{repo}/collaborators/{user}/permission", s.repo(s.permission))
	return s.faulty(m)
}

// faulty serves an injected fault instead of the request when one matches.
func (s *Server) faulty(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		var f *Fault
		for i := range s.faults {
			if s.faults[i].Path == "" || strings.Contains(r.URL.Path, s.faults[i].Path) {
				f = &s.faults[i]
				ff := *f
				f = &ff
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		if f == nil {
			next.ServeHTTP(w, r)
			return
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
		}
		msg, doc := "injected server error", "https://docs.github.com/rest"
		if !f.RateLimitReset.IsZero() {
			w.Header().Set("X-RateLimit-Limit", "5000")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(f.RateLimitReset.Unix(), 10))
			msg = "API rate limit exceeded for installation."
		} else if f.Status == http.StatusForbidden && f.RetryAfter > 0 {
			msg = "You have exceeded a secondary rate limit."
			doc = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
		}
		writeJSON(w, f.Status, map[string]any{"message": msg, "documentation_url": doc})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) refuse(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.refused = append(s.refused, msg)
	s.mu.Unlock()
	writeJSON(w, status, map[string]any{"message": msg})
}

// accessToken issues an installation token to a valid App JWT.
func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if err := s.verifyJWT(r.Header.Get("Authorization")); err != nil {
		s.refuse(w, http.StatusUnauthorized, "access token: %v", err)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		s.refuse(w, http.StatusNotFound, "access token: installation %q: %v", r.PathValue("id"), err)
		return
	}
	s.mu.Lock()
	_, ok := s.installations[id]
	var tok string
	var exp time.Time
	if ok {
		s.tokensIssued++
		tok = fmt.Sprintf("ghs_fake%d_%s", s.tokensIssued, randomHex(16))
		exp = s.now().Add(s.tokenTTL).UTC().Truncate(time.Second)
		s.tokens[tok] = token{installation: id, expires: exp}
	}
	s.mu.Unlock()
	if !ok {
		s.refuse(w, http.StatusNotFound, "access token: no installation %d", id)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "expires_at": exp.Format(time.RFC3339),
		"permissions": map[string]string{"checks": "write", "contents": "read", "metadata": "read", "pull_requests": "read"}})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// repo checks a request's installation token against the repository in
// its path before handing it to h.
func (s *Server) repo(h func(w http.ResponseWriter, r *http.Request, repo string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("owner") + "/" + r.PathValue("repo")
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "token ")
		if !ok {
			tok, ok = strings.CutPrefix(auth, "Bearer ")
		}
		if !ok || tok == "" {
			s.refuse(w, http.StatusUnauthorized, "%s %s: no installation token", r.Method, r.URL.Path)
			return
		}
		s.mu.Lock()
		t, known := s.tokens[tok]
		in := s.installations[t.installation]
		expired := known && !s.now().Before(t.expires)
		s.mu.Unlock()
		switch {
		case !known:
			s.refuse(w, http.StatusUnauthorized, "%s %s: unknown token", r.Method, r.URL.Path)
		case expired:
			s.refuse(w, http.StatusUnauthorized, "%s %s: token expired at %s", r.Method, r.URL.Path, t.expires.Format(time.RFC3339))
		case in == nil:
			s.refuse(w, http.StatusUnauthorized, "%s %s: installation %d was removed", r.Method, r.URL.Path, t.installation)
		case !in.repos[repo]:
			s.refuse(w, http.StatusNotFound, "%s %s: installation %d may not see %s", r.Method, r.URL.Path, t.installation, repo)
		default:
			h(w, r, repo)
		}
	}
}

func (s *Server) permission(w http.ResponseWriter, r *http.Request, repo string) {
	user := r.PathValue("user")
	s.mu.Lock()
	p := s.permissions[repo+" "+user]
	s.mu.Unlock()
	if p == "" {
		p = "none"
	}
	writeJSON(w, http.StatusOK, map[string]any{"permission": p, "role_name": p, "user": map[string]any{"login": user}})
}

func sortedRuns(runs []*CheckRun) []*CheckRun {
	out := append([]*CheckRun(nil), runs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID > out[j].ID }) // newest first, as GitHub lists them
	return out
}
