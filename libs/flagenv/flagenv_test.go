package flagenv

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type config struct {
	natsURL  string
	maxJobs  int
	verbose  bool
	timeout  time.Duration
	token    string
	pin      int
	fs       *flag.FlagSet
	output   *bytes.Buffer
	envNames []string
}

// newConfig defines the flags a typical ekaci binary has, two of them
// secrets, on a fresh ContinueOnError FlagSet.
func newConfig(t *testing.T) *config {
	t.Helper()
	c := &config{fs: flag.NewFlagSet("ekaci-test", flag.ContinueOnError), output: &bytes.Buffer{}}
	c.fs.SetOutput(c.output)
	c.fs.StringVar(&c.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server `URL`")
	c.fs.IntVar(&c.maxJobs, "max-jobs", 1, "builds to run at once")
	c.fs.BoolVar(&c.verbose, "verbose", false, "log more")
	c.fs.DurationVar(&c.timeout, "timeout", time.Hour, "build timeout")
	c.fs.StringVar(&c.token, "github-token", "", "GitHub API token")
	c.fs.IntVar(&c.pin, "pin", 0, "a numeric secret")
	Secret(c.fs, "github-token")
	Secret(c.fs, "pin")
	// Start every test from an environment without these variables.
	for _, v := range []string{"EKACI_NATS_URL", "EKACI_MAX_JOBS", "EKACI_VERBOSE", "EKACI_TIMEOUT",
		"EKACI_GITHUB_TOKEN", "EKACI_GITHUB_TOKEN_FILE", "EKACI_PIN", "EKACI_PIN_FILE"} {
		t.Setenv(v, "")
	}
	return c
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParse(t *testing.T) {
	type want struct {
		natsURL string
		maxJobs int
		verbose bool
		timeout time.Duration
		token   string
	}
	defaults := want{natsURL: "nats://127.0.0.1:4222", maxJobs: 1, timeout: time.Hour}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		// env values "@file:<content>" become a file holding content.
		want       want
		wantErr    error
		errMention []string // substrings the error must contain
		errHide    []string // substrings it must not (secrets)
	}{
		{name: "defaults", want: defaults},
		{
			name: "env sets every type",
			env:  map[string]string{"EKACI_NATS_URL": "nats://a:1", "EKACI_MAX_JOBS": "8", "EKACI_VERBOSE": "true", "EKACI_TIMEOUT": "90s"},
			want: want{natsURL: "nats://a:1", maxJobs: 8, verbose: true, timeout: 90 * time.Second},
		},
		{
			name: "flag beats env",
			args: []string{"--nats-url", "nats://flag:1", "-max-jobs=3"},
			env:  map[string]string{"EKACI_NATS_URL": "nats://env:1", "EKACI_MAX_JOBS": "8"},
			want: want{natsURL: "nats://flag:1", maxJobs: 3, timeout: time.Hour},
		},
		{
			name: "explicit flag equal to the default still beats env",
			args: []string{"-max-jobs=1"},
			env:  map[string]string{"EKACI_MAX_JOBS": "8"},
			want: defaults,
		},
		{
			name: "empty env keeps the default",
			env:  map[string]string{"EKACI_NATS_URL": ""},
			want: defaults,
		},
		{
			name: "unknown EKACI variables are ignored",
			env:  map[string]string{"EKACI_SOMETHING_ELSE": "whatever", "EKACI_MAX_JOBS_FILE": "/nonexistent"},
			want: defaults,
		},
		{
			name:       "bad int names variable and value",
			env:        map[string]string{"EKACI_MAX_JOBS": "abc"},
			wantErr:    ErrEnvValue,
			errMention: []string{"EKACI_MAX_JOBS", `"abc"`, "-max-jobs"},
		},
		{
			name:       "bad bool and bad duration are both reported",
			env:        map[string]string{"EKACI_VERBOSE": "maybe", "EKACI_TIMEOUT": "soon"},
			wantErr:    ErrEnvValue,
			errMention: []string{"EKACI_VERBOSE", `"maybe"`, "EKACI_TIMEOUT", `"soon"`},
		},
		{
			name: "secret from env",
			env:  map[string]string{"EKACI_GITHUB_TOKEN": "ghp_env"},
			want: want{natsURL: defaults.natsURL, maxJobs: 1, timeout: time.Hour, token: "ghp_env"},
		},
		{
			name: "secret from file, trailing newline trimmed",
			env:  map[string]string{"EKACI_GITHUB_TOKEN_FILE": "@file:ghp_file\n"},
			want: want{natsURL: defaults.natsURL, maxJobs: 1, timeout: time.Hour, token: "ghp_file"},
		},
		{
			name: "secret from file, CRLF trimmed, inner spaces kept",
			env:  map[string]string{"EKACI_GITHUB_TOKEN_FILE": "@file: a b \r\n"},
			want: want{natsURL: defaults.natsURL, maxJobs: 1, timeout: time.Hour, token: " a b "},
		},
		{
			name:       "secret in env and file is an error naming both",
			env:        map[string]string{"EKACI_GITHUB_TOKEN": "ghp_env", "EKACI_GITHUB_TOKEN_FILE": "@file:ghp_file"},
			wantErr:    ErrEnvConflict,
			errMention: []string{"EKACI_GITHUB_TOKEN ", "EKACI_GITHUB_TOKEN_FILE"},
			errHide:    []string{"ghp_env", "ghp_file"},
		},
		{
			name: "secret flag beats env and file",
			args: []string{"-github-token", "ghp_flag"},
			env:  map[string]string{"EKACI_GITHUB_TOKEN": "ghp_env", "EKACI_GITHUB_TOKEN_FILE": "@file:ghp_file"},
			want: want{natsURL: defaults.natsURL, maxJobs: 1, timeout: time.Hour, token: "ghp_flag"},
		},
		{
			name:       "missing secret file",
			env:        map[string]string{"EKACI_GITHUB_TOKEN_FILE": "/nonexistent/token"},
			wantErr:    ErrSecretFile,
			errMention: []string{"EKACI_GITHUB_TOKEN_FILE", "/nonexistent/token"},
		},
		{
			name:       "bad secret value is not echoed",
			env:        map[string]string{"EKACI_PIN": "12ab34"},
			wantErr:    ErrEnvValue,
			errMention: []string{"EKACI_PIN"},
			errHide:    []string{"12ab34"},
		},
		{
			name:       "bad secret file content is not echoed",
			env:        map[string]string{"EKACI_PIN_FILE": "@file:98zz76\n"},
			wantErr:    ErrEnvValue,
			errMention: []string{"EKACI_PIN_FILE"},
			errHide:    []string{"98zz76"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConfig(t)
			for k, v := range tt.env {
				if content, ok := strings.CutPrefix(v, "@file:"); ok {
					v = writeFile(t, content)
				}
				t.Setenv(k, v)
			}
			err := Parse(c.fs, tt.args, "EKACI")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				for _, s := range tt.errMention {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				for _, s := range tt.errHide {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error %q reveals %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{natsURL: c.natsURL, maxJobs: c.maxJobs, verbose: c.verbose, timeout: c.timeout, token: c.token}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	tests := []struct{ name, prefix, flag, want string }{
		{"dashes", "EKACI", "nats-url", "EKACI_NATS_URL"},
		{"prefix with underscore", "EKACI_", "max-jobs", "EKACI_MAX_JOBS"},
		{"dots and digits", "EKACI", "s3.bucket", "EKACI_S3_BUCKET"},
		{"no prefix", "", "http-addr", "HTTP_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EnvName(tt.prefix, tt.flag); got != tt.want {
				t.Errorf("EnvName(%q, %q) = %q, want %q", tt.prefix, tt.flag, got, tt.want)
			}
		})
	}
}

func TestUsageListsEnv(t *testing.T) {
	c := newConfig(t)
	err := Parse(c.fs, []string{"-h"}, "EKACI")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
	out := c.output.String()
	tests := []struct{ name, want string }{
		{"header", "Usage of ekaci-test:\n"},
		{"string flag with backquoted type and default", "  -nats-url URL\n    \tNATS server URL (default \"nats://127.0.0.1:4222\")\n    \tenv EKACI_NATS_URL\n"},
		{"int flag", "  -max-jobs int\n    \tbuilds to run at once (default 1)\n    \tenv EKACI_MAX_JOBS\n"},
		{"bool flag, zero default omitted", "  -verbose\n    \tlog more\n    \tenv EKACI_VERBOSE\n"},
		{"duration", "  -timeout duration\n    \tbuild timeout (default 1h0m0s)\n    \tenv EKACI_TIMEOUT\n"},
		{"secret", "  -github-token string\n    \tGitHub API token\n    \tenv EKACI_GITHUB_TOKEN or EKACI_GITHUB_TOKEN_FILE\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(out, tt.want) {
				t.Errorf("usage lacks %q:\n%s", tt.want, out)
			}
		})
	}
	if strings.Contains(out, "panic") {
		t.Errorf("usage reports a panic:\n%s", out)
	}
}

func TestSecretBoolStillTakesNoValue(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	insecure := fs.Bool("insecure", false, "")
	Secret(fs, "insecure")
	t.Setenv("EKACI_INSECURE", "")
	t.Setenv("EKACI_INSECURE_FILE", "")
	if err := Parse(fs, []string{"-insecure", "arg"}, "EKACI"); err != nil {
		t.Fatal(err)
	}
	if !*insecure || fs.Arg(0) != "arg" {
		t.Fatalf("insecure=%v args=%v, want true [arg]", *insecure, fs.Args())
	}
}

func TestSecretUnknownFlagPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Secret on an undefined flag did not panic")
		}
	}()
	Secret(flag.NewFlagSet("x", flag.ContinueOnError), "nope")
}

// TestFromEnvSkipsWhatWasGiven: FromEnv leaves the flags given says were
// set elsewhere (a command line another parser read) and sets the rest.
func TestFromEnvSkipsWhatWasGiven(t *testing.T) {
	t.Setenv("EKACI_NATS_URL", "nats://env:1")
	t.Setenv("EKACI_MAX_JOBS", "8")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	url := fs.String("nats-url", "nats://default:1", "")
	jobs := fs.Int("max-jobs", 1, "")
	*url = "nats://cli:1" // as another parser set it
	if err := FromEnv(fs, "EKACI", func(name string) bool { return name == "nats-url" }); err != nil {
		t.Fatal(err)
	}
	if *url != "nats://cli:1" || *jobs != 8 {
		t.Fatalf("nats-url %q, max-jobs %d; want the command line's nats://cli:1 and the environment's 8", *url, *jobs)
	}
	t.Setenv("EKACI_MAX_JOBS", "eight")
	if err := FromEnv(fs, "EKACI", func(string) bool { return false }); !errors.Is(err, ErrEnvValue) {
		t.Fatalf("FromEnv with a bad value = %v, want ErrEnvValue", err)
	}
}
