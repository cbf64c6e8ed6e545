package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/nixtest"
	"github.com/ekaci/ekaci/services/ekaci"
)

// buildBinary compiles this command once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ekaci")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSurvivesSIGKILLMidRun kills the all-in-one with SIGKILL while a
// build runs, starts it again on the same data dir, and checks the run
// completes with the same final states and every transition recorded once.
func TestSurvivesSIGKILLMidRun(t *testing.T) {
	nixtest.Require(t)
	bin := buildBinary(t)
	salt := fmt.Sprint(time.Now().UnixNano())
	repo := gitRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": `let mk = name: inputs: script: derivation { inherit name inputs; system = builtins.currentSystem; salt = "` + salt + `"; builder = "/bin/sh"; args = [ "-c" script ]; };
in rec {
  quick = mk "quick" [ ] "echo quick > $out";
  slow = mk "slow" [ quick ] "echo start; i=0; while [ $i -lt 6000000 ]; do i=$((i+1)); if [ $((i % 500000)) = 0 ]; then echo $i; fi; done; echo slow > $out";
  after = mk "after" [ slow ] "echo after > $out";
}`,
	})
	dataDir := t.TempDir()
	args := []string{"run", "--data-dir", dataDir, "--nats-port", "-1", "--nix-option", "substituters=",
		"--log-format", "json", "--output", "json", repo}

	// First run: killed as soon as the slow build has started.
	first := exec.Command(bin, args...)
	stderr, err := first.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan struct{})
	var seen bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "build started") && strings.Contains(sc.Text(), "-slow.drv") {
				_ = first.Process.Signal(syscall.SIGKILL)
				close(killed)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-killed:
	case <-time.After(2 * time.Minute):
		_ = first.Process.Kill()
		t.Fatalf("the slow build never started:\n%s", seen.String())
	}
	_ = first.Wait()
	if first.ProcessState.ExitCode() != -1 {
		t.Fatalf("first run was not killed: %v", first.ProcessState)
	}

	// Second run on the same data dir: it resumes and concludes.
	second := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	second.Stdout, second.Stderr = &out, &errOut
	done := make(chan error, 1)
	go func() { done <- second.Run() }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = second.Process.Kill()
		t.Fatalf("second run did not conclude:\n%s", errOut.String())
	}
	if code := second.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("second run exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	var doc struct {
		Conclusion string
		Jobs       []struct {
			Attrs []struct{ Attr, State, Drv string }
		}
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got, drvs := map[string]string{}, map[string]string{}
	for _, j := range doc.Jobs {
		for _, a := range j.Attrs {
			got[a.Attr], drvs[a.Attr] = a.State, a.Drv
		}
	}
	if doc.Conclusion != "success" || got["quick"] != "succeeded" || got["slow"] != "succeeded" || got["after"] != "succeeded" {
		t.Fatalf("after the restart: %s %v", doc.Conclusion, got)
	}
	// The slow build that was running when the process died is recorded
	// as interrupted by process death (read from the log, not from log
	// text), re-queued, then built.
	built := []string{"discovered", "buildable", "build_started", "build_succeeded"}
	checkHistory(t, dataDir, drvs, map[string][]string{
		"quick": built,
		"slow":  {"discovered", "buildable", "build_started", "build_failed_retry", "requeued", "buildable", "build_started", "build_succeeded"},
		"after": built,
	})
	if got := retryInterruption(t, dataDir, drvs["slow"]); got != eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH {
		t.Errorf("the killed build's retry was recorded as %v, want a process death", got)
	}
}

// retryInterruption is the interruption recorded on drvPath's
// build_failed_retry.
func retryInterruption(t *testing.T, dataDir, drvPath string) eventsv1.InterruptKind {
	t.Helper()
	ctx := context.Background()
	app, err := ekaci.Start(ctx, ekaci.Config{DataDir: dataDir, NatsPort: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	id, err := eventlog.DrvID(drvPath)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := app.Events().Load(ctx, eventlog.Drv, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if p := r.Event.GetDrvBuildFailedRetry(); p != nil {
			return p.GetInterruption()
		}
	}
	t.Fatalf("%s has no build_failed_retry", drvPath)
	return 0
}

// checkHistory opens the data dir's event log and checks each
// derivation's transitions, and that no event was recorded twice.
func checkHistory(t *testing.T, dataDir string, drvs map[string]string, want map[string][]string) {
	t.Helper()
	ctx := context.Background()
	app, err := ekaci.Start(ctx, ekaci.Config{DataDir: dataDir, NatsPort: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for attr, facts := range want {
		id, err := eventlog.DrvID(drvs[attr])
		if err != nil {
			t.Fatal(err)
		}
		recs, _, err := app.Events().Load(ctx, eventlog.Drv, id)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Fact)
		}
		if !slices.Equal(got, facts) {
			t.Errorf("%s: transitions %v\n want %v", attr, got, facts)
		}
	}
	ids := map[string]uint64{}
	err = app.Events().Read(ctx, 0, []string{"ekaci.evt.>"}, func(r eventlog.Record) error {
		if r.RecordedOn != "" {
			return nil // a transition a batched fact records: its event is that fact
		}
		if prev, dup := ids[r.Event.GetId()]; dup {
			t.Errorf("event %s recorded twice (seq %d and %d)", r.Event.GetId(), prev, r.Seq)
		}
		ids[r.Event.GetId()] = r.Seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckSurvivesSIGKILL kills the all-in-one with SIGKILL while a check
// runs: nothing of the check is left running, and the next run on the same
// data dir runs the check again, as attempt 2, once.
func TestCheckSurvivesSIGKILL(t *testing.T) {
	bin := buildBinary(t)
	repo := gitRepo(t, map[string]string{
		".ekaci/config.json": `{"checks": {"slow": {"command": "echo attempt; sleep 5; echo done"}}}`,
	})
	dataDir := t.TempDir()
	const uidBase = 64300
	args := []string{"run", "--data-dir", dataDir, "--nats-port", "-1", "--check-uid-base", fmt.Sprint(uidBase),
		"--log-format", "json", "--output", "json", repo}
	first := exec.Command(bin, args...)
	stderr, err := first.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan struct{})
	var seen bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "check started") {
				_ = first.Process.Signal(syscall.SIGKILL)
				close(killed)
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-killed:
	case <-time.After(2 * time.Minute):
		_ = first.Process.Kill()
		t.Fatalf("the check never started:\n%s", seen.String())
	}
	_ = first.Wait()
	// The sandbox dies with the checker (parent-death signal, pid
	// namespace): no process of the checks' uids is left.
	deadline := time.Now().Add(30 * time.Second)
	for len(checkProcs(uidBase)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := checkProcs(uidBase); len(left) > 0 {
		t.Fatalf("processes of the killed check left: %v", left)
	}

	second := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	second.Stdout, second.Stderr = &out, &errOut
	done := make(chan error, 1)
	go func() { done <- second.Run() }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = second.Process.Kill()
		t.Fatalf("second run did not conclude:\n%s", errOut.String())
	}
	if code := second.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("second run exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	var doc struct {
		Conclusion string
		Checks     []struct{ Name, State string }
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if doc.Conclusion != "success" || len(doc.Checks) != 1 || doc.Checks[0].State != "succeeded" {
		t.Fatalf("after the restart: %s", out.String())
	}
	ctx := context.Background()
	app, err := ekaci.Start(ctx, ekaci.Config{DataDir: dataDir, NatsPort: -1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	var facts []string
	err = app.Events().Read(ctx, 0, []string{eventlog.KindFilter(eventlog.Check)}, func(r eventlog.Record) error {
		f := r.Fact
		if s := r.Event.GetCheckStarted(); s != nil {
			f += fmt.Sprint(s.GetAttempt())
		}
		if s := r.Event.GetCheckSucceeded(); s != nil {
			f += fmt.Sprint(s.GetAttempt())
		}
		facts = append(facts, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"queued", "started1", "started2", "succeeded2"}; !slices.Equal(facts, want) {
		t.Errorf("check facts %v, want %v: run again once, as attempt 2", facts, want)
	}
}

// checkProcs lists live processes whose uid is one of the checks' (the
// first 2 from base, ekaci's default --check-max-jobs).
func checkProcs(base int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		s := string(status)
		if strings.Contains(s, "State:\tZ") {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && (f[1] == fmt.Sprint(base) || f[1] == fmt.Sprint(base+1)) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}
