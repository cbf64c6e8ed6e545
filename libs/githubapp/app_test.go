package githubapp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubtest"
)

func newApp(t *testing.T, s *githubtest.Server) *githubapp.App {
	t.Helper()
	app, err := githubapp.New(githubapp.Config{AppID: s.AppID, PrivateKey: s.PrivateKeyPEM(), BaseURL: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestNewRefusesWhatCannotWork(t *testing.T) {
	s := githubtest.New(t)
	for _, tt := range []struct {
		name string
		cfg  githubapp.Config
		want string
	}{
		{"no app", githubapp.Config{}, "no GitHub App configured"},
		{"bad key", githubapp.Config{AppID: 1, PrivateKey: []byte("not a key")}, "private key"},
		{"bad base", githubapp.Config{AppID: 1, PrivateKey: s.PrivateKeyPEM(), BaseURL: "ftp://x"}, "want http(s)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := githubapp.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestRetry drives Retry.Do against the fake's faults: what is retried,
// how long it waits, and what is dropped at once.
func TestRetry(t *testing.T) {
	for _, tt := range []struct {
		name      string
		faults    func() []githubtest.Fault
		wantErr   error // nil: succeeds
		wantWaits []time.Duration
	}{
		{"server error with Retry-After", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 502, RetryAfter: time.Second}}
		}, nil, []time.Duration{time.Second}},
		{"server errors without Retry-After back off", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 500}, {Status: 503}}
		}, nil, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}},
		{"secondary rate limit", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 403, RetryAfter: 2 * time.Second}}
		}, nil, []time.Duration{2 * time.Second}},
		{"primary rate limit waits for its reset", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 403, RateLimitReset: time.Now().Add(2 * time.Second)}}
		}, nil, []time.Duration{time.Second /* at least; up to reset + 1 s */}},
		{"a refusal is not retried", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 422}}
		}, githubapp.ErrRefused, nil},
		{"attempts run out", func() []githubtest.Fault {
			return []githubtest.Fault{{Status: 500}, {Status: 500}, {Status: 500}}
		}, errAny, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := githubtest.New(t)
			s.Install(3, "o/r")
			c := newApp(t, s).Client(3)
			faults := tt.faults()
			for i := range faults {
				faults[i].Path = "/check-runs" // not the token request
			}
			s.Inject(faults...)
			var waits []time.Duration
			r := githubapp.Retry{Attempts: 3, Backoff: 100 * time.Millisecond, OnRetry: func(_ error, d time.Duration) { waits = append(waits, d) }}
			err := r.Do(context.Background(), "create", func(ctx context.Context) (*github.Response, error) {
				_, resp, err := c.Checks.CreateCheckRun(ctx, "o", "r", github.CreateCheckRunOptions{Name: "n", HeadSHA: strings.Repeat("a", 40)})
				return resp, err
			})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Do = %v, want success", err)
			case tt.wantErr == errAny && err == nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Do = %v, want %v", err, tt.wantErr)
			}
			if len(waits) != len(tt.wantWaits) {
				t.Fatalf("waits = %v, want %v", waits, tt.wantWaits)
			}
			for i, w := range tt.wantWaits {
				if tt.name == "primary rate limit waits for its reset" {
					if waits[i] < w || waits[i] > 4*time.Second {
						t.Fatalf("wait %v, want between %v and 4s (until the reset)", waits[i], w)
					}
					continue
				}
				if waits[i] != w {
					t.Fatalf("waits = %v, want %v", waits, tt.wantWaits)
				}
			}
			runs := len(s.CheckRuns())
			if want := map[bool]int{true: 1, false: 0}[tt.wantErr == nil]; runs != want {
				t.Fatalf("%d check runs created, want %d", runs, want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestTokenIsCachedPerInstallation(t *testing.T) {
	s := githubtest.New(t)
	s.Install(3, "o/r")
	s.Install(4, "o/s")
	app := newApp(t, s)
	ctx := context.Background()
	a, err := app.Token(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := app.Token(ctx, 3); again != a {
		t.Fatal("a second Token for the same installation is another token")
	}
	b, err := app.Token(ctx, 4)
	if err != nil || b == a {
		t.Fatalf("Token(4) = %q, %v; want a token of its own", b, err)
	}
	if inst, ok := s.TokenInstallation(b); !ok || inst != 4 {
		t.Fatalf("token of installation 4 belongs to %d (%v)", inst, ok)
	}
	if _, err := app.Token(ctx, 99); err == nil || strings.Contains(err.Error(), "ghs_") {
		t.Fatalf("Token(99) = %v, want an error that names no token", err)
	}
}

// stallingBody is an answer whose body never ends on its own: a read
// waits for the request's context.
type stallingBody struct{ ctx context.Context }

func (b stallingBody) Read([]byte) (int, error) { <-b.ctx.Done(); return 0, b.ctx.Err() }
func (b stallingBody) Close() error             { return nil }

// stallAPI answers every repository call with headers and a body that
// stalls; tokens come from the fake GitHub.
type stallAPI struct{ next http.RoundTripper }

func (s stallAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.Contains(r.URL.Path, "/repos/") {
		return s.next.RoundTrip(r)
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: stallingBody{r.Context()}, Request: r}, nil
}

// TestTimeoutCoversTheBody: Config.Timeout bounds a call whose answer's
// body stalls (it is the request's context, not http.Client's timer).
func TestTimeoutCoversTheBody(t *testing.T) {
	s := githubtest.New(t)
	s.Install(3, "o/r")
	app, err := githubapp.New(githubapp.Config{AppID: s.AppID, PrivateKey: s.PrivateKeyPEM(), BaseURL: s.URL,
		Transport: stallAPI{http.DefaultTransport}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, err = app.Client(3).Checks.GetCheckRun(ctx, "o", "r", 1)
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("a stalled answer: %v, want the call's own deadline exceeded", err)
	}
}
