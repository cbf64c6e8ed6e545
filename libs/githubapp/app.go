// Package githubapp authenticates ekaci as a GitHub App and gives it
// go-github clients: one per installation, each with its installation
// token cached until shortly before it expires (ghinstallation refreshes
// it a minute early), against a configurable API base URL (github.com,
// GitHub Enterprise, or a local fake in tests).
//
// A token is handed out only to code that sends it to GitHub or git, and
// never logged: errors name the installation, never the token.
package githubapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"
)

// DefaultBaseURL is GitHub's public API.
const DefaultBaseURL = "https://api.github.com"

// ErrNotConfigured means no App id or private key was given.
var ErrNotConfigured = errors.New("no GitHub App configured: set --github-app-id and --github-private-key(-file)")

// Config says which App ekaci is and where its API is.
type Config struct {
	// AppID is the App's numeric id (its settings page, "App ID").
	AppID int64
	// PrivateKey is the App's private key, PEM as GitHub hands it out.
	PrivateKey []byte
	// BaseURL is the REST API's root: https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server.
	BaseURL string
	// Transport is the HTTP transport under the authentication (nil:
	// http.DefaultTransport).
	Transport http.RoundTripper
	// Timeout bounds one HTTP request (default 30 s).
	Timeout time.Duration
}

// App is an authenticated GitHub App.
type App struct {
	cfg  Config
	base *url.URL
	apps *ghinstallation.AppsTransport

	mu            sync.Mutex
	installations map[int64]*ghinstallation.Transport
}

// New checks the configuration (the key must parse) and returns the App.
func New(cfg Config) (*App, error) {
	if cfg.AppID == 0 || len(cfg.PrivateKey) == 0 {
		return nil, ErrNotConfigured
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	base, err := url.Parse(cfg.BaseURL + "/")
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("github api base url %q: want http(s)://host[/path]", cfg.BaseURL)
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	apps, err := ghinstallation.NewAppsTransport(cfg.Transport, cfg.AppID, cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github app %d private key: %w", cfg.AppID, err)
	}
	apps.BaseURL = cfg.BaseURL
	return &App{cfg: cfg, base: base, apps: apps, installations: map[int64]*ghinstallation.Transport{}}, nil
}

func (a *App) transport(installation int64) *ghinstallation.Transport {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.installations[installation]
	if t == nil {
		t = ghinstallation.NewFromAppsTransport(a.apps, installation)
		t.BaseURL = a.cfg.BaseURL
		a.installations[installation] = t
	}
	return t
}

// Client returns a go-github client acting as the installation.
func (a *App) Client(installation int64) *github.Client {
	// The timeout is the request's context, not http.Client.Timeout: the
	// client's timer ends only when a body is closed, and go-github
	// replaces the body of an error answer (a 403, a 5xx) after reading
	// it, never closing the original, so each left a goroutine waiting
	// out the whole timeout (goleak in services/notifier/checkrun saw
	// them after TestFaultsAreRetriedAndRefusalsDropped).
	c := github.NewClient(&http.Client{Transport: timeoutTransport{next: a.transport(installation), timeout: a.cfg.Timeout}})
	c.BaseURL = a.base
	return c
}

// Token returns a live installation token (cached; refreshed a minute
// before it expires), for git over HTTPS. Its error never holds a token.
func (a *App) Token(ctx context.Context, installation int64) (string, error) {
	tok, err := a.transport(installation).Token(ctx)
	if err != nil {
		return "", fmt.Errorf("installation %d token: %w", installation, err)
	}
	return tok, nil
}

// timeoutTransport bounds a request, its body included, by a context
// that ends at the timeout, at the body's end (EOF or an error) or when
// the body is closed, whichever comes first.
type timeoutTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t timeoutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	resp, err := t.next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelAtEnd{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelAtEnd ends its request's context once the body is read to its
// end or closed.
type cancelAtEnd struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelAtEnd) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.cancel()
	}
	return n, err
}

func (b *cancelAtEnd) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
