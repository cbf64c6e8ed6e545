package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/nixtest"
)

func gitRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "test"}} {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.invalid"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

func TestRunPrintsTheOutcomeAndExitsByIt(t *testing.T) {
	nixtest.Require(t)
	salt := fmt.Sprint(time.Now().UnixNano())
	repo := gitRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": `let mk = name: script: derivation { inherit name; system = builtins.currentSystem; salt = "` + salt + `"; builder = "/bin/sh"; args = [ "-c" script ]; };
in { good = mk "good" "echo ok > $out"; bad = mk "bad" "echo nope; exit 1"; }`,
	})
	var stdout, stderr bytes.Buffer
	// Flags before and after the repository, as a new user writes them
	// (ekaci run REPO --output json), and one from the environment.
	t.Setenv("EKACI_LOG_LEVEL", "warn")
	code := run(context.Background(), []string{"run", "--data-dir", t.TempDir(), "--nats-port", "-1", repo,
		"--nix-option", "substituters=", "--output", "json"}, &stdout, &stderr)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d (a failed attribute)\nstderr:\n%s", code, exitFailed, stderr.String())
	}
	var doc struct {
		Conclusion string
		Jobs       []struct {
			Job   string
			Attrs []struct {
				Attr, State, Drv string
				LogTail          string `json:"log_tail"`
			}
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("stdout is not the JSON document: %v\n%s", err, stdout.String())
	}
	if doc.Conclusion != "failure" || len(doc.Jobs) != 1 || len(doc.Jobs[0].Attrs) != 2 {
		t.Fatalf("document = %+v", doc)
	}
	got := map[string]string{}
	for _, a := range doc.Jobs[0].Attrs {
		got[a.Attr] = a.State
		if a.Attr == "bad" && !strings.Contains(a.LogTail, "nope") {
			t.Errorf("bad's log tail %q lacks the build's output", a.LogTail)
		}
	}
	if got["good"] != "succeeded" || got["bad"] != "failed" {
		t.Fatalf("states = %v", got)
	}
	if !strings.Contains(stderr.String(), "embedded NATS at nats://127.0.0.1:") {
		t.Errorf("stderr does not print the embedded NATS URL:\n%s", stderr.String())
	}
}

func TestBadInvocationsSayWhatIsWrong(t *testing.T) {
	notRepo := filepath.Join(t.TempDir(), "missing")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	repo := gitRepo(t, map[string]string{"README": "x"})
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no command", nil, nil, exitUsage, "Usage:"},
		{"unknown command", []string{"build"}, nil, exitUsage, `unknown command "build"`},
		{"run without repo", []string{"run"}, nil, exitUsage, "want exactly one repository"},
		{"repo missing", []string{"run", notRepo}, nil, exitUsage, notRepo + ": not a directory"},
		{"bad revision", []string{"run", "--rev", "no-such-branch", repo}, nil, exitUsage, `revision "no-such-branch" is not a commit`},
		{"bad output", []string{"run", "--output", "yaml", repo}, nil, exitUsage, `--output "yaml"`},
		{"bad output after the repository", []string{"run", repo, "--output", "yaml"}, nil, exitUsage, `--output "yaml"`},
		{"two repositories", []string{"run", repo, repo}, nil, exitUsage, "want exactly one repository, got 2 arguments"},
		{"unknown flag", []string{"serve", "--bogus"}, nil, exitUsage, "unknown flag: --bogus"},
		{"bad flag value", []string{"run", repo, "--max-jobs", "two"}, nil, exitUsage, `invalid argument "two" for "--max-jobs"`},
		{"serve with arguments", []string{"serve", "extra"}, nil, exitUsage, `unexpected arguments ["extra"]`},
		{"bad nix option", []string{"run", "--nix-option", "substituters", repo}, nil, exitUsage, "want name=value"},
		{"bad env value", []string{"run", repo}, map[string]string{"EKACI_MAX_JOBS": "two"}, exitUsage, "EKACI_MAX_JOBS"},
		{"unreachable NATS", []string{"run", "--data-dir", t.TempDir(), "--nats-url", "nats://127.0.0.1:1", repo}, nil, exitError, "cannot reach NATS at nats://127.0.0.1:1"},
		{"data dir not writable", []string{"run", "--data-dir", filepath.Join(file, "data"), repo}, nil, exitError, "cannot create " + filepath.Join(file, "data")},
		{"log level", []string{"serve", "--log-level", "loud"}, nil, exitUsage, `"loud"`},
		{"negative memory limit", []string{"serve", "--memory-limit-mib", "-5"}, nil, exitUsage, "--memory-limit-mib -5"},
		{"half a GitHub App", []string{"serve", "--webhook-listen", "127.0.0.1:0"}, nil, exitUsage, "needs --webhook-listen, --webhook-secret, --github-app-id and --github-private-key together"},
		{"GitHub App key not a key", []string{"serve", "--webhook-listen", "127.0.0.1:0", "--webhook-secret", "s", "--github-app-id", "1"},
			map[string]string{"EKACI_GITHUB_PRIVATE_KEY": "not a pem"}, exitUsage, "github app 1 private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tt.want)
			}
		})
	}
}

// TestVersionNamesWhatItRunsWith: ekaci version prints its own version
// and the versions of the Nix (asked in the same run) and nats-server it
// runs with.
func TestVersionNamesWhatItRunsWith(t *testing.T) {
	nixtest.Require(t)
	out, err := exec.Command("nix-store", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(out))
	nixVer := fields[len(fields)-1]
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ekaci ") || lines[1] != "nix "+nixVer ||
		lines[2] != "nats-server "+server.VERSION+" (embedded)" {
		t.Fatalf("ekaci version printed:\n%s\nwant ekaci …, nix %s, nats-server %s (embedded)", stdout.String(), nixVer, server.VERSION)
	}
	// With an external NATS, that server's own answer.
	srv := natstest.NewServer(t)
	stdout.Reset()
	if code := run(context.Background(), []string{"version", "--nats-url", srv.ClientURL()}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if want := "nats-server " + server.VERSION + " (at " + srv.ClientURL() + ")"; !strings.Contains(stdout.String(), want) {
		t.Fatalf("ekaci version --nats-url printed:\n%s\nwant %q", stdout.String(), want)
	}
}

func TestServeStopsCleanlyOnCancel(t *testing.T) {
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", dataDir, "--nats-port", "-1", "--log-level", "warn"}, &bytes.Buffer{}, &stderr)
	}()
	// Cancel once it is up (the lock file names the running process).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dataDir, "ekaci.lock")); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not take the data dir lock within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d after cancellation, want 0\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not stop within a minute of cancellation")
	}
	// Stopped means released: the data dir can be used again at once.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if code := run(ctx2, []string{"serve", "--data-dir", dataDir, "--nats-port", "-1", "--log-level", "warn"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Fatalf("second serve on the released data dir exited %d", code)
	}
}
