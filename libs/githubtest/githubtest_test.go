package githubtest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"

	"github.com/ekaci/ekaci/libs/githubtest"
)

func client(t *testing.T, s *githubtest.Server, key []byte, installation int64) (*github.Client, *ghinstallation.Transport) {
	t.Helper()
	tr, err := ghinstallation.New(http.DefaultTransport, s.AppID, installation, key)
	if err != nil {
		t.Fatal(err)
	}
	tr.BaseURL = s.URL
	c := github.NewClient(&http.Client{Transport: tr})
	c.BaseURL, _ = url.Parse(s.URL + "/")
	return c, tr
}

func TestAppAuthentication(t *testing.T) {
	s := githubtest.New(t)
	s.Install(7, "o/r")
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	wrongPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(otherKey)})
	tests := []struct {
		name         string
		key          []byte
		installation int64
		repo         string
		wantOK       bool
		wantRefusal  string
	}{
		{"the App's key", s.PrivateKeyPEM(), 7, "r", true, ""},
		{"another key", wrongPEM, 7, "r", false, "does not verify against the App's public key"},
		{"unknown installation", s.PrivateKeyPEM(), 8, "r", false, "no installation 8"},
		{"repository outside the installation", s.PrivateKeyPEM(), 7, "secret", false, "may not see o/secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := client(t, s, tt.key, tt.installation)
			_, _, err := c.Checks.CreateCheckRun(context.Background(), "o", tt.repo, github.CreateCheckRunOptions{Name: "x", HeadSHA: strings.Repeat("a", 40)})
			if (err == nil) != tt.wantOK {
				t.Fatalf("CreateCheckRun: err = %v, want ok %v", err, tt.wantOK)
			}
			if tt.wantRefusal != "" {
				refused := s.Refused()
				if len(refused) == 0 || !strings.Contains(refused[len(refused)-1], tt.wantRefusal) {
					t.Fatalf("refusals = %q, want the last to contain %q", refused, tt.wantRefusal)
				}
			}
		})
	}
}

func TestTokensExpire(t *testing.T) {
	s := githubtest.New(t)
	s.Install(7, "o/r")
	_, tr := client(t, s, s.PrivateKeyPEM(), 7)
	ctx := context.Background()
	tok, err := tr.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inst, ok := s.TokenInstallation(tok); !ok || inst != 7 {
		t.Fatalf("TokenInstallation(new token) = %d, %v; want 7, true", inst, ok)
	}
	if tok2, err := tr.Token(ctx); err != nil || tok2 != tok {
		t.Fatalf("second Token() = %q, %v; want the cached %q", tok2, err, tok)
	}
	if n := s.TokensIssued(); n != 1 {
		t.Fatalf("TokensIssued = %d, want 1 (cached)", n)
	}

	s.SetTokenTTL(time.Second)
	_, short := client(t, s, s.PrivateKeyPEM(), 7)
	brief, err := short.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := s.TokenInstallation(brief); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a token with a 1 s lifetime still works after 10 s")
		}
	}
	if _, ok := s.TokenInstallation(tok); !ok {
		t.Fatal("the hour-long token stopped working")
	}
	s.Uninstall(7)
	if _, ok := s.TokenInstallation(tok); ok {
		t.Fatal("a token of a removed installation still works")
	}
}

func TestCheckRunsAreValidatedAndRecorded(t *testing.T) {
	s := githubtest.New(t)
	s.Install(7, "o/r")
	c, _ := client(t, s, s.PrivateKeyPEM(), 7)
	ctx := context.Background()
	sha := strings.Repeat("b", 40)
	run, _, err := c.Checks.CreateCheckRun(ctx, "o", "r", github.CreateCheckRunOptions{Name: "ekaci: configure", HeadSHA: sha,
		Status: github.String("in_progress"), ExternalID: github.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Checks.UpdateCheckRun(ctx, "o", "r", run.GetID(), github.UpdateCheckRunOptions{Name: "ekaci: configure",
		Conclusion: github.String("success"), Output: &github.CheckRunOutput{Title: github.String("t"), Summary: github.String("s")}})
	if err != nil {
		t.Fatal(err)
	}
	runs := s.CheckRuns()
	if len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != "success" || runs[0].Summary != "s" {
		t.Fatalf("CheckRuns() = %+v, want one completed success with summary s", runs)
	}
	calls := s.Calls()
	if len(calls) != 2 || calls[0].Method != "POST" || calls[1].Body["conclusion"] != "success" {
		t.Fatalf("Calls() = %+v, want a POST then a PATCH with conclusion success", calls)
	}
	list, _, err := c.Checks.ListCheckRunsForRef(ctx, "o", "r", sha, &github.ListCheckRunsOptions{CheckName: github.String("ekaci: configure")})
	if err != nil || list.GetTotal() != 1 || list.CheckRuns[0].GetExternalID() != "k" {
		t.Fatalf("ListCheckRunsForRef = %+v, %v; want the one run with external id k", list, err)
	}
	refusals := []struct {
		name string
		opt  github.UpdateCheckRunOptions
		want string
	}{
		{"summary over the limit", github.UpdateCheckRunOptions{Name: "x", Output: &github.CheckRunOutput{Title: github.String("t"),
			Summary: github.String(strings.Repeat("é", githubtest.MaxSummary+1))}}, "output.summary is 65536 characters"},
		{"51 annotations", github.UpdateCheckRunOptions{Name: "x", Output: &github.CheckRunOutput{Title: github.String("t"),
			Summary: github.String("s"), Annotations: make([]*github.CheckRunAnnotation, 51)}}, "51 annotations"},
		{"unknown conclusion", github.UpdateCheckRunOptions{Name: "x", Conclusion: github.String("passed")}, "not a check-run conclusion"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := c.Checks.UpdateCheckRun(ctx, "o", "r", run.GetID(), tt.opt)
			if err == nil || resp.StatusCode != http.StatusUnprocessableEntity {
				t.Fatalf("UpdateCheckRun = %v, want 422", err)
			}
			refused := s.Refused()
			if !strings.Contains(refused[len(refused)-1], tt.want) {
				t.Fatalf("refusal %q, want it to contain %q", refused[len(refused)-1], tt.want)
			}
		})
	}
}

func TestFaultsOnDemand(t *testing.T) {
	s := githubtest.New(t)
	s.Install(7, "o/r")
	c, _ := client(t, s, s.PrivateKeyPEM(), 7)
	ctx := context.Background()
	reset := time.Now().Add(time.Hour).Truncate(time.Second)
	s.Inject(githubtest.Fault{Status: 403, RateLimitReset: reset, Path: "/check-runs"},
		githubtest.Fault{Status: 503, RetryAfter: 2 * time.Second, Path: "/check-runs"},
		githubtest.Fault{Status: 403, RetryAfter: 3 * time.Second, Path: "/check-runs"})
	opt := github.CreateCheckRunOptions{Name: "x", HeadSHA: strings.Repeat("c", 40)}
	_, _, err := c.Checks.CreateCheckRun(ctx, "o", "r", opt)
	var rl *github.RateLimitError
	if !errors.As(err, &rl) || !rl.Rate.Reset.Time.Equal(reset) {
		t.Fatalf("first call: %v, want a rate limit until %v", err, reset)
	}
	// go-github now refuses calls itself until the reset; a fresh client
	// sees the next fault.
	c2, _ := client(t, s, s.PrivateKeyPEM(), 7)
	_, resp, err := c2.Checks.CreateCheckRun(ctx, "o", "r", opt)
	if err == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("second call: %v (status %v), want 503 with Retry-After 2", err, resp)
	}
	_, _, err = c2.Checks.CreateCheckRun(ctx, "o", "r", opt)
	var abuse *github.AbuseRateLimitError
	if !errors.As(err, &abuse) || abuse.GetRetryAfter() != 3*time.Second {
		t.Fatalf("third call: %v, want a secondary rate limit with Retry-After 3s", err)
	}
	c3, _ := client(t, s, s.PrivateKeyPEM(), 7) // c2 waits out the secondary limit itself
	if _, _, err := c3.Checks.CreateCheckRun(ctx, "o", "r", opt); err != nil {
		t.Fatalf("fourth call: %v, want the faults used up", err)
	}
}
