package ekaci_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/nixtest"
	"github.com/ekaci/ekaci/services/ekaci"
)

// requireNix fails (not skips) without Nix: `make test` installs it, and a
// pipeline test that silently skips proves nothing.
func requireNix(t *testing.T) {
	t.Helper()
	nixtest.Require(t)
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=test", "-c", "user.email=test@example.invalid"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// makeRepo writes files into a new git repository, commits them, and
// returns its path. "@SALT@" in a file is replaced by a value unique to
// this test run, so derivations are new to the Nix store and really build.
func makeRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	salt := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(body, "@SALT@", salt)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "test")
	return dir
}

// simpleFiles is a chain (base <- lib <- app) and a diamond (base <-
// left, right <- top) of derivations that each write one line.
func simpleFiles() map[string]string {
	return map[string]string{
		".ekaci/config.json": `{"jobs": {"demo": {"file": "default.nix"}}}`,
		"default.nix": `
let
  step = name: inputs: derivation {
    inherit name inputs;
    system = builtins.currentSystem;
    salt = "@SALT@";
    builder = "/bin/sh";
    args = [ "-c" ''
      line="${name}"
      for i in $inputs; do read -r dep < "$i"; line="$line <- $dep"; done
      echo "$line" > "$out"
    '' ];
  };
in rec {
  base = step "demo-base" [ ];
  lib = step "demo-lib" [ base ];
  app = step "demo-app" [ lib ];
  left = step "demo-left" [ base ];
  right = step "demo-right" [ base ];
  top = step "demo-top" [ left right ];
}`,
	}
}

// demoRepo makes the demo pull request of examples/demo with the same
// script `make demo` uses: base is HEAD~1, head is HEAD.
func demoRepo(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	out, err := exec.Command(filepath.Join("..", "..", "scripts", "demo-repo.sh"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("demo-repo.sh: %v\n%s", err, out)
	}
	return dir
}

type harness struct {
	t       *testing.T
	dataDir string
	app     *ekaci.App
	cancel  context.CancelFunc
	done    chan error
}

func config(t *testing.T, dataDir string) ekaci.Config {
	return ekaci.Config{
		DataDir: dataDir, NatsPort: -1, MaxJobs: 2, FODMaxJobs: 1,
		// Checker uids of this package's own (see TestMain).
		CheckUIDBase:    checkUIDBase,
		NoOutputTimeout: time.Minute,
		NixOptions:      []string{"substituters", ""},
		Logger:          zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
}

// start runs the all-in-one on dataDir until the test ends or stop.
func start(t *testing.T, dataDir string) *harness {
	t.Helper()
	return startWith(t, dataDir, func(*ekaci.Config) {})
}

func startWith(t *testing.T, dataDir string, mod func(*ekaci.Config)) *harness {
	t.Helper()
	cfg := config(t, dataDir)
	mod(&cfg)
	app, err := ekaci.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dataDir: dataDir, app: app, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- app.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop drains the stages and closes everything, as SIGTERM does.
func (h *harness) stop() {
	if h.app == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("run: %v", err)
		}
	case <-time.After(time.Minute):
		h.t.Errorf("stages did not stop within a minute of cancellation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.app.Close(ctx)
	h.app = nil
}

func (h *harness) run(repo string) *ekaci.Outcome {
	h.t.Helper()
	return h.runRequest(ekaci.Request{Repo: repo})
}

func (h *harness) runRequest(req ekaci.Request) *ekaci.Outcome {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cr, err := ekaci.Resolve(ctx, req)
	if err != nil {
		h.t.Fatal(err)
	}
	id, err := ekaci.Submit(ctx, h.app.Events(), cr)
	if err != nil {
		h.t.Fatal(err)
	}
	out, err := ekaci.Wait(ctx, h.app.Events(), id, testWriter{h.t})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// states maps job.attr to its final state.
func states(o *ekaci.Outcome) map[string]string {
	m := map[string]string{}
	for _, js := range o.Jobsets {
		for _, r := range js.GetResults() {
			m[js.GetJob()+"."+r.GetAttr()] = r.GetState()
		}
	}
	return m
}

// transitions lists the facts recorded for a derivation, in order.
func transitions(t *testing.T, log *eventlog.Log, drvPath string) []string {
	t.Helper()
	id, err := eventlog.DrvID(drvPath)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := log.Load(context.Background(), eventlog.Drv, id)
	if err != nil {
		t.Fatal(err)
	}
	var facts []string
	for _, r := range recs {
		facts = append(facts, r.Fact)
	}
	return facts
}

func drvPaths(o *ekaci.Outcome) map[string]string {
	m := map[string]string{}
	for _, js := range o.Jobsets {
		for _, r := range js.GetResults() {
			m[js.GetJob()+"."+r.GetAttr()] = r.GetDrvPath()
		}
	}
	return m
}

var built = []string{"discovered", "buildable", "build_started", "build_succeeded"}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDemoBuildsEveryAttribute(t *testing.T) {
	requireNix(t)
	addr := freeAddr(t)
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) { c.HTTPAddr = addr })
	out := h.run(makeRepo(t, simpleFiles()))
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("conclusion = %v (%s), want success", out.Conclusion, out.Summary)
	}
	want := map[string]string{}
	for _, a := range []string{"base", "lib", "app", "left", "right", "top"} {
		want["demo."+a] = "succeeded"
	}
	if got := states(out); !mapsEqual(got, want) {
		t.Fatalf("states = %v\nwant %v", got, want)
	}
	for attr, drv := range drvPaths(out) {
		if got := transitions(t, h.app.Events(), drv); !slices.Equal(got, built) {
			t.Errorf("%s: transitions %v, want %v", attr, got, built)
		}
	}
	// What happened shows in the metrics, and the process is healthy.
	for path, wants := range map[string][]string{
		"/metrics": {`ekaci_builds_finished_total{outcome="succeeded"} 6`, `ekaci_events_appended_total{aggregate="drv",type="build_succeeded"} 6`, "ekaci_build_duration_seconds_count", "process_resident_memory_bytes"},
		"/healthz": {"ok"},
		"/readyz":  {"ok"},
	} {
		code, body := get(t, "http://"+addr+path)
		if code != http.StatusOK {
			t.Errorf("%s: status %d\n%s", path, code, body)
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q", path, w)
			}
		}
	}
	// The outputs really are in the store, with what the builders wrote.
	top := outputOf(t, drvPaths(out)["demo.top"])
	if b, err := os.ReadFile(top); err != nil || !strings.HasPrefix(string(b), "demo-top <- demo-left <- demo-base") {
		t.Fatalf("output of top %s: %q, %v", top, b, err)
	}
}

func outputOf(t *testing.T, drv string) string {
	t.Helper()
	out, err := exec.Command("nix-store", "--query", "--outputs", drv).Output()
	if err != nil {
		t.Fatalf("nix-store --query --outputs %s: %v", drv, err)
	}
	return strings.TrimSpace(string(out))
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

const failingNix = `
let
  system = builtins.currentSystem;
  mk = name: script: inputs: derivation {
    inherit name system inputs;
    salt = "@SALT@";
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
in rec {
  ok = mk "ok" "echo fine > $out" [ ];
  broken = mk "broken" "echo 'compiling broken'; echo 'error: it does not work' >&2; exit 3" [ ok ];
  user = mk "user" "echo never > $out" [ broken ];
  userOfUser = mk "user-of-user" "echo never > $out" [ user ];
}
`

// differences maps job.attr to its difference from the base.
func differences(o *ekaci.Outcome) map[string]string {
	m := map[string]string{}
	for _, js := range o.Jobsets {
		for _, r := range js.GetResults() {
			m[js.GetJob()+"."+r.GetAttr()] = strings.ToLower(strings.TrimPrefix(r.GetDifference().String(), "DIFFERENCE_"))
		}
	}
	return m
}

func TestDemoPullRequest(t *testing.T) {
	requireNix(t)
	dataDir := t.TempDir()
	h := startWith(t, dataDir, func(c *ekaci.Config) { c.NoOutputTimeout = 2 * time.Second })
	out := h.runRequest(ekaci.Request{Repo: demoRepo(t), Rev: "HEAD", Base: "HEAD~1"})
	// Once concluded, the change's base and head worktrees are removed.
	worktrees := func() []string {
		m, _ := filepath.Glob(filepath.Join(dataDir, "git", "worktrees", "*", out.ChangeID+"-*"))
		return m
	}
	changeRecs, _, err := h.app.Events().Load(context.Background(), eventlog.Change, out.ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range changeRecs {
		if co := r.Event.GetChangeCheckedOut(); co != nil {
			for _, wt := range []string{co.GetHeadWorktree(), co.GetBaseWorktree()} {
				if ok, _ := filepath.Match(filepath.Join(dataDir, "git", "worktrees", "*", out.ChangeID+"-*"), wt); !ok {
					t.Fatalf("worktree %s is not where this test looks for it", wt)
				}
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(worktrees()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := worktrees(); len(left) > 0 {
		t.Errorf("worktrees of the concluded change are still there: %v", left)
	}
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Errorf("conclusion = %v (%s), want success: every new or changed attribute builds", out.Conclusion, out.Summary)
	}
	retried := func(last string) []string {
		return []string{"discovered", "buildable", "build_started", "build_failed_retry", "requeued", "buildable", "build_started", last}
	}
	want := map[string]struct {
		state, difference string
		facts             []string
	}{
		"demo.core":        {"succeeded", "unchanged", built},
		"demo.lib":         {"succeeded", "unchanged", built},
		"demo.app":         {"succeeded", "changed", built},
		"demo.left":        {"succeeded", "unchanged", built},
		"demo.right":       {"succeeded", "unchanged", built},
		"demo.top":         {"succeeded", "unchanged", built},
		"demo.broken":      {"failed", "unchanged", retried("build_failed")},
		"demo.usesBroken":  {"transitive-failure", "unchanged", []string{"discovered", "dependency_failed"}},
		"demo.silent":      {"interrupted", "unchanged", retried("interrupted")},
		"demo.evalError":   {"eval-error", "unchanged", nil},
		"demo.flaky":       {"succeeded", "new", retried("build_succeeded")},
		"demo.fetched":     {"succeeded", "new", built},
		"demo.preferLocal": {"succeeded", "new", built},
		"demo.extra.added": {"succeeded", "new", built},
		"demo.retired":     {"removed", "removed", nil},
		"tools.nixlint":    {"succeeded", "unchanged", built},
	}
	gotStates, gotDiffs, drvs := states(out), differences(out), drvPaths(out)
	if len(gotStates) != len(want) {
		t.Errorf("%d attributes, want %d: %v", len(gotStates), len(want), gotStates)
	}
	for attr, w := range want {
		if gotStates[attr] != w.state || gotDiffs[attr] != w.difference {
			t.Errorf("%s: %s/%s, want %s/%s", attr, gotStates[attr], gotDiffs[attr], w.state, w.difference)
		}
		if w.facts == nil {
			continue
		}
		if got := transitions(t, h.app.Events(), drvs[attr]); !slices.Equal(got, w.facts) {
			t.Errorf("%s: transitions %v\n want %v", attr, got, w.facts)
		}
	}
	for _, js := range out.Jobsets {
		for _, r := range js.GetResults() {
			check := map[string]string{
				"broken":     "demo-broken does not compile",
				"silent":     "no output for 2s",
				"evalError":  "demo: this attribute does not evaluate",
				"usesBroken": "",
			}
			if sub, ok := check[r.GetAttr()]; ok && !strings.Contains(r.GetError(), sub) {
				t.Errorf("%s: error %q lacks %q", r.GetAttr(), r.GetError(), sub)
			}
			if r.GetAttr() == "usesBroken" && !strings.Contains(r.GetCause(), "demo-broken.drv") {
				t.Errorf("usesBroken: cause %q does not name demo-broken", r.GetCause())
			}
		}
	}
	// The checks: lint passes with its package on PATH; style fails on
	// the head and on the base, so it does not fail the change.
	checks := map[string]ekaci.Check{}
	for _, ev := range out.Checks {
		c := ekaci.CheckOf(ev)
		checks[c.Name] = c
	}
	if c := checks["lint"]; c.State != "succeeded" || c.ExitCode != 0 || c.Decides {
		t.Errorf("check lint: %+v, want succeeded", c)
	}
	if c := checks["style"]; c.State != "failed" || c.ExitCode != 1 || c.Base != "failed" || c.Decides || !strings.Contains(c.Tail, "columns (limit 72)") {
		t.Errorf("check style: %+v, want failed with exit 1, on the base too, not deciding", c)
	}
	for _, c := range checks {
		if st, err := os.Stat(filepath.Join(dataDir, "logs", c.Log)); err != nil || st.Size() == 0 {
			t.Errorf("check %s: no log at %s: %v", c.Name, c.Log, err)
		}
	}
	if len(checks) != 2 || !strings.HasSuffix(out.Summary, "0 of 2 checks failed") {
		t.Errorf("checks %v, summary %q: want lint and style, none failing the change", checks, out.Summary)
	}
	// Only the head's closure is built; the removed attribute is not.
	if _, err := os.Stat(outputOf(t, drvs["demo.retired"])); err == nil {
		t.Errorf("the removed attribute was built")
	}
}

func TestFailureIsRetriedOnceAndPropagates(t *testing.T) {
	for _, mode := range []struct {
		name    string
		noBatch bool
	}{{"batched builds", false}, {"one nix-build per derivation", true}} {
		t.Run(mode.name, func(t *testing.T) {
			testFailureIsRetriedOnceAndPropagates(t, mode.noBatch)
		})
	}
}

func testFailureIsRetriedOnceAndPropagates(t *testing.T, noBatch bool) {
	requireNix(t)
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) { c.NoBatch = noBatch })
	out := h.run(makeRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix":        failingNix,
	}))
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE {
		t.Fatalf("conclusion = %v (%s), want failure", out.Conclusion, out.Summary)
	}
	want := map[string]string{"main.ok": "succeeded", "main.broken": "failed", "main.user": "transitive-failure", "main.userOfUser": "transitive-failure"}
	if got := states(out); !mapsEqual(got, want) {
		t.Fatalf("states = %v\nwant %v", got, want)
	}
	drvs := drvPaths(out)
	wantFacts := map[string][]string{
		"main.ok":         built,
		"main.broken":     {"discovered", "buildable", "build_started", "build_failed_retry", "requeued", "buildable", "build_started", "build_failed"},
		"main.user":       {"discovered", "dependency_failed"},
		"main.userOfUser": {"discovered", "dependency_failed"},
	}
	for attr, want := range wantFacts {
		if got := transitions(t, h.app.Events(), drvs[attr]); !slices.Equal(got, want) {
			t.Errorf("%s: transitions %v, want %v", attr, got, want)
		}
	}
	for _, js := range out.Jobsets {
		for _, r := range js.GetResults() {
			switch r.GetAttr() {
			case "broken":
				if !strings.Contains(r.GetError(), "it does not work") {
					t.Errorf("broken: error %q does not carry the log tail", r.GetError())
				}
			case "user", "userOfUser":
				if !strings.Contains(r.GetCause(), "broken") {
					t.Errorf("%s: cause %q does not name the failed derivation", r.GetAttr(), r.GetCause())
				}
			}
		}
	}
}

func TestResumesAfterRestartOnTheSameDataDir(t *testing.T) {
	requireNix(t)
	dataDir := t.TempDir()
	repo := makeRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		// slow makes sure the first process stops with work still to do.
		"default.nix": `
let mk = name: script: inputs: derivation { inherit name inputs; system = builtins.currentSystem; salt = "@SALT@"; builder = "/bin/sh"; args = [ "-c" script ]; };
in rec {
  slow = mk "slow" "echo start; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done > $out" [ ];
  after = mk "after" "echo after > $out" [ slow ];
}`,
	})
	first := start(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cr, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	id, err := ekaci.Submit(ctx, first.app.Events(), cr)
	if err != nil {
		t.Fatal(err)
	}
	// Stop as soon as the first build has started.
	waitFor(t, first.app.Events(), eventlog.FactFilter(eventlog.Drv, "build_started"))
	first.stop()

	second := start(t, dataDir)
	if _, err := ekaci.Submit(ctx, second.app.Events(), cr); err != nil {
		t.Fatalf("resubmitting joins the recorded change: %v", err)
	}
	out, err := ekaci.Wait(ctx, second.app.Events(), id, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"main.slow": "succeeded", "main.after": "succeeded"}
	if got := states(out); !mapsEqual(got, want) {
		t.Fatalf("states after restart = %v, want %v", got, want)
	}
	// Whether the slow build finished in the first process's grace period
	// or was interrupted and rebuilt, every transition is recorded once and
	// the history is a legal one.
	for attr, drv := range drvPaths(out) {
		got := transitions(t, second.app.Events(), drv)
		interrupted := []string{"discovered", "buildable", "build_started", "build_failed_retry", "requeued", "buildable", "build_started", "build_succeeded"}
		if !slices.Equal(got, built) && !slices.Equal(got, interrupted) {
			t.Errorf("%s: transitions %v, want %v or %v", attr, got, built, interrupted)
		}
	}
}

func waitFor(t *testing.T, log *eventlog.Log, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	found := fmt.Errorf("found")
	for ctx.Err() == nil {
		err := log.Read(ctx, 0, []string{filter}, func(eventlog.Record) error { return found })
		if err == found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no event on %s within 2 minutes", filter)
}

func TestChangesWithoutBuilds(t *testing.T) {
	requireNix(t)
	h := start(t, t.TempDir())
	tests := []struct {
		name       string
		files      map[string]string
		conclusion eventsv1.Conclusion
		summaryHas string
	}{
		{"no config", map[string]string{"README": "nothing here"}, eventsv1.Conclusion_CONCLUSION_NEUTRAL, ".ekaci/config.json not found"},
		{"malformed config", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix", "atr": "x"}}}`, "default.nix": "{}"},
			eventsv1.Conclusion_CONCLUSION_FAILURE, "jobs.main.atr"},
		{"file does not evaluate", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`, "default.nix": "{ a = ; }"},
			eventsv1.Conclusion_CONCLUSION_FAILURE, "default.nix"},
		{"config names a missing file", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "nope.nix"}}}`},
			eventsv1.Conclusion_CONCLUSION_FAILURE, `jobs.main.file: "nope.nix" does not exist`},
		{"config file escapes", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "../etc/passwd"}}}`},
			eventsv1.Conclusion_CONCLUSION_FAILURE, "leaves the repository"},
		{"a .drv that does not exist", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
			"default.nix": `{ gone = { type = "derivation"; name = "gone"; drvPath = "/nix/store/00000000000000000000000000000000-gone.drv"; }; }`},
			eventsv1.Conclusion_CONCLUSION_FAILURE, "00000000000000000000000000000000-gone.drv does not exist"},
		{"disallowed eval failure", map[string]string{".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix", "allow_eval_failures": false}}}`,
			"default.nix": `{ bad = throw "nope"; }`},
			eventsv1.Conclusion_CONCLUSION_FAILURE, "allow_eval_failures is false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := h.run(makeRepo(t, tt.files))
			if out.Conclusion != tt.conclusion {
				t.Fatalf("conclusion = %v (%s), want %v", out.Conclusion, out.Summary, tt.conclusion)
			}
			text := out.Summary
			for _, js := range out.Jobsets {
				for _, r := range js.GetResults() {
					text += "\n" + r.GetError()
				}
			}
			if !strings.Contains(text, tt.summaryHas) {
				t.Fatalf("outcome %q does not mention %q", text, tt.summaryHas)
			}
		})
	}
}

func TestMissingCommitIsACheckoutFailure(t *testing.T) {
	requireNix(t)
	h := start(t, t.TempDir())
	repo := makeRepo(t, simpleFiles())
	out := h.runRequest(ekaci.Request{Repo: repo, Rev: strings.Repeat("ab", 20)})
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE || !strings.Contains(out.Summary, "checkout failed") || !strings.Contains(out.Summary, strings.Repeat("ab", 20)) {
		t.Fatalf("outcome %v %q, want a checkout failure naming the commit", out.Conclusion, out.Summary)
	}
	notGit := t.TempDir() // a directory, but no repository
	out = h.runRequest(ekaci.Request{Repo: notGit, Rev: strings.Repeat("cd", 20)})
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_FAILURE || !strings.Contains(out.Summary, "unknown repository") || !strings.Contains(out.Summary, notGit) {
		t.Fatalf("outcome %v %q, want a checkout failure", out.Conclusion, out.Summary)
	}
}

func TestStartRefusesBadSetups(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	held := t.TempDir()
	first, err := ekaci.Start(context.Background(), config(t, held))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close(context.Background()) })

	tests := []struct {
		name    string
		mod     func(*ekaci.Config)
		wantErr string
	}{
		{"data dir under a file", func(c *ekaci.Config) { c.DataDir = filepath.Join(file, "data") }, "cannot create"},
		{"second instance", func(c *ekaci.Config) { c.DataDir = held }, "used by another ekaci"},
		{"unreachable NATS", func(c *ekaci.Config) { c.NatsURL = "nats://127.0.0.1:1" }, "cannot reach NATS at nats://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(t, t.TempDir())
			tt.mod(&cfg)
			app, err := ekaci.Start(context.Background(), cfg)
			if err == nil {
				app.Close(context.Background())
				t.Fatalf("started; want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, tt.wantErr)
			}
		})
	}
}
