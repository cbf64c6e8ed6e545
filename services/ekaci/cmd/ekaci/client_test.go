package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/nixtest"
)

// submit, status and wait against a running `ekaci serve`, through its
// NATS only: submit prints the change, status sees it running (a build
// of it sleeps 3 s), wait prints the outcome and exits by it, status then
// prints the same outcome, and submitting again joins the same change.
func TestSubmitStatusWaitAgainstServe(t *testing.T) {
	nixtest.Require(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		served <- run(ctx, []string{"serve", "--data-dir", t.TempDir(), "--nats-port", fmt.Sprint(port), "--log-level", "warn",
			"--nix-option", "substituters="}, &bytes.Buffer{}, &serveErr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-served; code != 0 {
			t.Errorf("serve exited %d: %s", code, serveErr.String())
		}
	})
	salt := fmt.Sprint(time.Now().UnixNano())
	repo := gitRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": `let mk = name: script: derivation { inherit name; system = builtins.currentSystem; salt = "` + salt + `"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" script ]; };
in { good = mk "good" "echo ok > $out"; slow = mk "slow" "sleep 3; echo ok > $out"; bad = mk "bad" "echo nope; exit 1"; }`,
	})
	cli := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append(args, "--nats-url", url), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	// serve is up once submit reaches its event log.
	var id string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, out, errOut := cli("submit", repo)
		if code == 0 {
			id = strings.TrimSpace(out)
			break
		}
		if code != exitError || time.Now().After(deadline) {
			t.Fatalf("submit exited %d: %s", code, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, out, errOut := cli("status", id); code != exitStillRunning || !strings.Contains(out, "change "+id+": running") {
		t.Fatalf("status right after submit: exit %d, %q (%s); want %d and running", code, out, errOut, exitStillRunning)
	}
	code, waited, errOut := cli("wait", id, "--output", "json")
	if code != exitFailed {
		t.Fatalf("wait exited %d, want %d (bad fails): %s", code, exitFailed, errOut)
	}
	for _, want := range []string{`"conclusion": "failure"`, `"attr": "good"`, `"attr": "slow"`, `"attr": "bad"`, `"state": "failed"`} {
		if !strings.Contains(waited, want) {
			t.Errorf("wait's outcome lacks %s:\n%s", want, waited)
		}
	}
	if code, out, _ := cli("status", id, "--output", "json"); code != exitFailed || out != waited {
		t.Errorf("status after the conclusion: exit %d\n%s\nwant %d and wait's outcome\n%s", code, out, exitFailed, waited)
	}
	if code, out, _ := cli("submit", repo); code != 0 || strings.TrimSpace(out) != id {
		t.Errorf("submitting again: exit %d, %q; want the same change %s", code, out, id)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown change", []string{"status", "0123456789abcdef0123"}, exitUsage, "never requested"},
		{"not a change id", []string{"wait", "../x"}, exitUsage, "is not a change id"},
		{"a URL with a revision name", []string{"submit", "file:///srv/repos/x", "--rev", "main"}, exitUsage, "give a full commit id"},
		{"a relative --repo-url", []string{"submit", repo, "--repo-url", "srv/x"}, exitUsage, "want a URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := cli(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("%v: exit %d, %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
			}
		})
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"wait", id, "--nats-url", "nats://127.0.0.1:1"}, &bytes.Buffer{}, &stderr); code != exitError ||
		!strings.Contains(stderr.String(), "cannot reach NATS") {
		t.Errorf("wait with no NATS: exit %d, %q", code, stderr.String())
	}
}
