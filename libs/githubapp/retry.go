package githubapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/go-github/v60/github"
)

// ErrRefused marks an answer no retry can change (a 4xx other than a rate
// limit: bad input, no permission, not found): log it and drop the work.
var ErrRefused = errors.New("refused by GitHub")

// Retry says how often and how long to retry a call.
type Retry struct {
	// Attempts bounds the calls (default 6).
	Attempts int
	// Backoff is the first wait when GitHub gives none; it doubles up to
	// 30 s (default 1 s).
	Backoff time.Duration
	// MaxWait is the longest single wait: a rate limit that resets later
	// than this is returned as an error for the caller to try again later
	// (default 2 minutes).
	MaxWait time.Duration
	// Sleep waits (tests may shorten it); nil sleeps for real, or until
	// ctx ends.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnRetry, when set, is told about each retry and its wait.
	OnRetry func(err error, wait time.Duration)
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 6
	}
	if r.Backoff <= 0 {
		r.Backoff = time.Second
	}
	if r.MaxWait <= 0 {
		r.MaxWait = 2 * time.Minute
	}
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Do calls op until it succeeds, GitHub refuses it for good (ErrRefused),
// or the attempts are used up. A primary rate limit waits until
// X-RateLimit-Reset, a secondary one or a server error for Retry-After
// when GitHub sends one, and otherwise backs off exponentially.
func (r Retry) Do(ctx context.Context, what string, op func(ctx context.Context) (*github.Response, error)) error {
	r = r.withDefaults()
	backoff := r.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var resp *github.Response
		resp, err = op(ctx)
		if err == nil {
			return nil
		}
		wait, retry := classify(err, resp, backoff)
		if !retry {
			return fmt.Errorf("%s: %w: %w", what, ErrRefused, err)
		}
		if attempt >= r.Attempts {
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempt, err)
		}
		if wait > r.MaxWait {
			return fmt.Errorf("%s: GitHub asks to wait %s, longer than %s: %w", what, wait.Round(time.Second), r.MaxWait, err)
		}
		if r.OnRetry != nil {
			r.OnRetry(err, wait)
		}
		if serr := r.Sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%s: %w (while waiting after: %v)", what, serr, err)
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// classify says whether an error is worth another call, and after how long.
func classify(err error, resp *github.Response, backoff time.Duration) (time.Duration, bool) {
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		return max(time.Until(rl.Rate.Reset.Time), 0) + time.Second, true
	}
	var abuse *github.AbuseRateLimitError
	if errors.As(err, &abuse) {
		if d := abuse.GetRetryAfter(); d > 0 {
			return d, true
		}
		return max(backoff, time.Minute), true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return 0, false
	}
	if resp == nil || resp.Response == nil {
		return backoff, true // no answer: the network, a timeout
	}
	h := resp.Response.Header
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Until(time.Unix(reset, 0)), 0) + time.Second, true
		}
	}
	switch code := resp.StatusCode; {
	case code >= 500, code == http.StatusTooManyRequests:
		return backoff, true
	}
	return 0, false
}
