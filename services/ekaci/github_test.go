package ekaci_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
	"github.com/ekaci/ekaci/libs/githubtest"
	"github.com/ekaci/ekaci/services/ekaci"
	"github.com/ekaci/ekaci/services/webhook"
)

// ghHarness is the all-in-one with its GitHub App, against the fake
// GitHub API: signed deliveries go to the real webhook over loopback,
// the gitter fetches https://github.com/octo/<name>.git from local
// repositories, real Nix builds, and check runs land in the fake.
type ghHarness struct {
	*harness
	gh     *githubtest.Server
	url    string
	secret []byte
	repos  string // where https://github.com/octo/<name>.git lives
	n      int
}

func startGitHub(t *testing.T) *ghHarness {
	t.Helper()
	gh := githubtest.New(t)
	gh.Install(11) // repositories are added per test (installation events)
	app, err := githubapp.New(githubapp.Config{AppID: gh.AppID, PrivateKey: gh.PrivateKeyPEM(), BaseURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	repos := t.TempDir()
	secret := []byte("e2e-secret")
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) {
		c.GitHub = &ekaci.GitHubConfig{App: app, Listener: ln, Secret: secret,
			Policy:    webhook.Policy{RequireApproval: true},
			CloneURLs: map[string]string{"https://github.com/octo/": repos + "/"}}
	})
	return &ghHarness{harness: h, gh: gh, url: "http://" + ln.Addr().String() + "/", secret: secret, repos: repos}
}

// repo makes https://github.com/octo/<name>.git with a base commit
// (files) and a head commit (files with changes applied), and lets the
// installation see it. "@SALT@" makes derivations new to the store.
func (g *ghHarness) repo(t *testing.T, name string, base, change map[string]string) (githubtest.Repo, string, string) {
	t.Helper()
	dir := filepath.Join(g.repos, name+".git")
	salt := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	write := func(files map[string]string) {
		for n, body := range files {
			p := filepath.Join(dir, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(body, "@SALT@", salt)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(base)
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "base")
	baseSHA := git(t, dir, "rev-parse", "HEAD")
	git(t, dir, "checkout", "-q", "-b", "feature")
	write(change)
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "--allow-empty", "-m", "head")
	headSHA := git(t, dir, "rev-parse", "HEAD")
	g.gh.Install(11, g.visible(name)...)
	g.gh.SetPermission("octo/"+name, "octocat", "write")
	g.gh.SetPermission("octo/"+name, "maintainer", "maintain")
	return githubtest.Repo{Owner: "octo", Name: name, Installation: 11}, baseSHA, headSHA
}

var installed []string

func (g *ghHarness) visible(name string) []string {
	installed = append(installed, "octo/"+name)
	return installed
}

// deliver sends a signed delivery and returns GitHub's view of the answer.
func (g *ghHarness) deliver(t *testing.T, event string, body []byte) (int, string) {
	t.Helper()
	g.n++
	return g.deliverAs(t, event, fmt.Sprintf("delivery-%d-%d", time.Now().UnixNano(), g.n), body)
}

func (g *ghHarness) deliverAs(t *testing.T, event, delivery string, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, msg, err := githubtest.Deliver(ctx, g.url, g.secret, event, delivery, body, "")
	if err != nil {
		t.Fatal(err)
	}
	return code, msg
}

// runsOn are the check runs on a commit, by name.
func (g *ghHarness) runsOn(head string) map[string]githubtest.CheckRun {
	m := map[string]githubtest.CheckRun{}
	for _, r := range g.gh.CheckRuns() {
		if r.HeadSHA == head {
			m[r.Name] = r
		}
	}
	return m
}

// settle waits until every run on head is completed and the job gate
// exists, and returns them.
func (g *ghHarness) settle(t *testing.T, head string, gates ...string) map[string]githubtest.CheckRun {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		runs := g.runsOn(head)
		done := len(runs) > 0
		for _, r := range runs {
			done = done && r.Status == "completed"
		}
		for _, gate := range gates {
			_, ok := runs[gate]
			done = done && ok
		}
		if done {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("check runs on %s not all completed within 4 minutes: %+v (refused: %q)", head[:8], runs, g.gh.Refused())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func names(runs map[string]githubtest.CheckRun) []string {
	var out []string
	for n := range runs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func expectRuns(t *testing.T, runs map[string]githubtest.CheckRun, want map[string]string) {
	t.Helper()
	if fmt.Sprint(names(runs)) != fmt.Sprint(sortedKeys(want)) {
		t.Fatalf("check runs %q, want exactly %q", names(runs), sortedKeys(want))
	}
	for name, conclusion := range want {
		if runs[name].Conclusion != conclusion {
			t.Errorf("%s concluded %q (%s), want %q", name, runs[name].Conclusion, runs[name].Title, conclusion)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// nixFile is a job of derivations: ok ones that write a line, and bad
// ones that fail; deps lists each derivation's inputs.
func nixFile(ok []string, bad []string, deps map[string][]string) string {
	var b strings.Builder
	b.WriteString(`let
  mk = name: fail: inputs: derivation {
    inherit name inputs;
    system = builtins.currentSystem;
    salt = "@SALT@";
    builder = "/bin/sh";
    args = [ "-c" (if fail then "echo building ${name}; echo 'error: ${name} is broken' >&2; exit 1" else "echo ${name} > $out") ];
  };
in rec {
`)
	attr := func(name string, fail bool) {
		var in []string
		in = append(in, deps[name]...)
		fmt.Fprintf(&b, "  %s = mk \"%s\" %v [ %s ];\n", name, name, fail, strings.Join(in, " "))
	}
	for _, n := range ok {
		attr(n, false)
	}
	for _, n := range bad {
		attr(n, true)
	}
	b.WriteString("}\n")
	return b.String()
}

const cfgJSON = `{"jobs": {"pkgs": {"file": "default.nix"}}}`

var gate = checkname.Job("pkgs")

// TestGitHubApp drives the GitHub App end to end, as GitHub would.
func TestGitHubApp(t *testing.T) {
	requireNix(t)
	g := startGitHub(t)
	log := g.app.Events()

	t.Run("forged signature", func(t *testing.T) {
		body := githubtest.PullRequest(githubtest.Repo{Owner: "octo", Name: "x", Installation: 11}, "opened", githubtest.PR{Number: 1, Head: strings.Repeat("a", 40), Base: strings.Repeat("b", 40)})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, _, err := githubtest.Deliver(ctx, g.url, g.secret, "pull_request", "forged", body, githubtest.Sign([]byte("not the secret"), body))
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("forged delivery: %d %v, want 401", code, err)
		}
	})

	var cleanRepo githubtest.Repo
	var cleanPR githubtest.PR
	t.Run("clean pull request", func(t *testing.T) {
		r, base, head := g.repo(t, "clean", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"a"}, nil, nil)},
			map[string]string{"default.nix": nixFile([]string{"a", "b"}, nil, map[string][]string{"b": {"a"}})})
		pr := githubtest.PR{Number: 1, Head: head, Base: base}
		cleanRepo, cleanPR = r, pr
		body := githubtest.PullRequest(r, "opened", pr)
		if code, msg := g.deliverAs(t, "pull_request", "clean-opened", body); code != http.StatusAccepted {
			t.Fatalf("delivery: %d %s", code, msg)
		}
		runs := g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
		if s := runs[gate].Summary; !strings.Contains(s, "1 new, 0 changed, 0 removed, 1 unchanged") || !strings.Contains(s, "**2 built**, 0 cached") {
			t.Errorf("gate summary lacks the counts:\n%s", s)
		}
		calls := len(g.gh.Calls())
		// The same delivery again, after the change concluded: a no-op.
		code, msg := g.deliverAs(t, "pull_request", "clean-opened", body)
		if code != http.StatusAccepted || !strings.Contains(msg, "already handled") {
			t.Fatalf("redelivery: %d %q, want 202 already handled", code, msg)
		}
		time.Sleep(time.Second) // nothing is expected; give a wrong reaction time to show
		if n := len(g.gh.Calls()); n != calls {
			t.Fatalf("the redelivery made %d check-run calls", n-calls)
		}
	})

	t.Run("failing attribute with 20 dependents", func(t *testing.T) {
		deps := map[string][]string{}
		var dependents []string
		for i := 0; i < 20; i++ {
			n := fmt.Sprintf("dep%02d", i)
			dependents = append(dependents, n)
			deps[n] = []string{"broken"}
		}
		r, base, head := g.repo(t, "failing", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"fine"}, nil, nil)},
			map[string]string{"default.nix": nixFile(append([]string{"fine"}, dependents...), []string{"broken"}, deps)})
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 2, Head: head, Base: base})); code != http.StatusAccepted {
			t.Fatalf("delivery: %d %s", code, msg)
		}
		runs := g.settle(t, head, gate)
		want := map[string]string{checkname.Configure: "success", gate: "failure", checkname.Attr("broken", "pkgs"): "failure"}
		for _, d := range dependents {
			want[checkname.Attr(d, "pkgs")] = "failure"
		}
		expectRuns(t, runs, want)
		s := runs[gate].Summary
		if strings.Count(s, "depend on it") != 1 || !strings.Contains(s, "`broken` failed, and 20 attributes that depend on it") ||
			!strings.Contains(s, "error: broken is broken") {
			t.Errorf("gate summary is not one root-cause line with its log tail:\n%s", s)
		}
		if runs[gate].Title != "21 new or changed attributes failed (1 root cause)" {
			t.Errorf("gate title %q", runs[gate].Title)
		}
	})

	t.Run("nothing to build", func(t *testing.T) {
		files := map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"only"}, nil, nil)}
		r, base, head := g.repo(t, "nothing", files, map[string]string{"README": "docs only"})
		// The base is tested first (a push to main), so the head's one
		// attribute is unchanged and already built.
		if code, msg := g.deliver(t, "push", githubtest.Push(r, "refs/heads/main", strings.Repeat("0", 40), base, false)); code != http.StatusAccepted {
			t.Fatalf("push: %d %s", code, msg)
		}
		g.settle(t, base, gate)
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 3, Head: head, Base: base})); code != http.StatusAccepted {
			t.Fatalf("delivery: %d %s", code, msg)
		}
		runs := g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
		if runs[gate].Title != "Succeeded: nothing new or changed to build" {
			t.Errorf("gate title %q", runs[gate].Title)
		}
	})

	t.Run("failures already on the base branch", func(t *testing.T) {
		r, base, head := g.repo(t, "legacy", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"good"}, []string{"legacy"}, nil)},
			map[string]string{"default.nix": nixFile([]string{"good", "added"}, []string{"legacy"}, nil)})
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 4, Head: head, Base: base})); code != http.StatusAccepted {
			t.Fatalf("delivery: %d %s", code, msg)
		}
		runs := g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
		if s := runs[gate].Summary; !strings.Contains(s, "### Already failing on the base branch") || !strings.Contains(s, "`legacy` failed") {
			t.Errorf("gate summary does not mark the base's failure:\n%s", s)
		}
	})

	t.Run("unapproved author, then approval", func(t *testing.T) {
		r, base, head := g.repo(t, "outside", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"x"}, nil, nil)},
			map[string]string{"default.nix": nixFile([]string{"x", "y"}, nil, nil)})
		pr := githubtest.PR{Number: 5, Head: head, Base: base, Author: "stranger", AuthorAssociation: "FIRST_TIME_CONTRIBUTOR"}
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", pr)); code != http.StatusAccepted {
			t.Fatalf("delivery: %d %s", code, msg)
		}
		runs := g.runsOn(head)
		expectRuns(t, runs, map[string]string{checkname.Approval: "action_required"})
		id := runs[checkname.Approval].ID
		recs, _, err := log.Load(context.Background(), eventlog.Change, eventlog.ChangeID("https://github.com/octo/outside.git", head, base))
		if err != nil || len(recs) != 0 {
			t.Fatalf("an unapproved pull request was requested: %d facts (%v)", len(recs), err)
		}
		click := githubtest.CheckRunEvent(r, "requested_action", id, checkname.Approval, head, pr, checkname.ApproveAction, "maintainer")
		if code, msg := g.deliver(t, "check_run", click); code != http.StatusAccepted {
			t.Fatalf("approval: %d %s", code, msg)
		}
		runs = g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Approval: "success", checkname.Configure: "success", gate: "success"})
	})

	t.Run("merge group after the pull request passed", func(t *testing.T) {
		dir := filepath.Join(g.repos, "clean.git")
		git(t, dir, "checkout", "-q", "main")
		git(t, dir, "merge", "-q", "--no-ff", "-m", "Merge pull request #1", "feature")
		merge := git(t, dir, "rev-parse", "HEAD")
		before := builds(t, log)
		if code, msg := g.deliver(t, "merge_group", githubtest.MergeGroup(cleanRepo, merge, cleanPR.Base, cleanPR)); code != http.StatusAccepted {
			t.Fatalf("merge group: %d %s", code, msg)
		}
		runs := g.settle(t, merge, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
		if after := builds(t, log); after != before {
			t.Fatalf("the merge group built %d derivations, want none (the pull request built them)", after-before)
		}
		if s := runs[gate].Summary; !strings.Contains(s, "**0 built**, 2 cached") {
			t.Errorf("gate summary says something was built:\n%s", s)
		}
	})

	t.Run("superseded by a new push", func(t *testing.T) {
		gateFile := markerDir(t)
		slow := `{"jobs": {"pkgs": {"file": "default.nix"}}}`
		files := func(v string) map[string]string {
			return map[string]string{".ekaci/config.json": slow, "default.nix": waitingNix(v, gateFile)}
		}
		r, base, a := g.repo(t, "super", files("base"), files("one"))
		dir := filepath.Join(g.repos, "super.git")
		for n, body := range files("two") {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(strings.ReplaceAll(body, "@SALT@", t.Name())), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		git(t, dir, "commit", "-q", "-am", "two")
		b := git(t, dir, "rev-parse", "HEAD")
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 6, Head: a, Base: base})); code != http.StatusAccepted {
			t.Fatalf("opened: %d %s", code, msg)
		}
		waitRun(t, g, a, gate, func(cr githubtest.CheckRun) bool { return strings.HasPrefix(cr.Title, "Building") })
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "synchronize", githubtest.PR{Number: 6, Head: b, Base: base, Before: a})); code != http.StatusAccepted {
			t.Fatalf("synchronize: %d %s", code, msg)
		}
		old := waitRun(t, g, a, gate, func(cr githubtest.CheckRun) bool { return cr.Status == "completed" })
		if old.Conclusion != "cancelled" || !strings.Contains(old.Title, "superseded by "+b) {
			t.Fatalf("the older head's gate: %s %q, want cancelled naming %s", old.Conclusion, old.Title, b)
		}
		if err := os.WriteFile(filepath.Join(gateFile, "open"), nil, 0o666); err != nil {
			t.Fatal(err)
		}
		runs := g.settle(t, b, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
	})

	t.Run("superseded, deliveries out of order", func(t *testing.T) {
		r, base, a := g.repo(t, "order", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"p"}, nil, nil)},
			map[string]string{"default.nix": nixFile([]string{"p", "q"}, nil, nil)})
		dir := filepath.Join(g.repos, "order.git")
		git(t, dir, "commit", "-q", "--allow-empty", "-m", "newer")
		b := git(t, dir, "rev-parse", "HEAD")
		// The newer head's delivery arrives first.
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "synchronize", githubtest.PR{Number: 8, Head: b, Base: base, Before: a})); code != http.StatusAccepted {
			t.Fatalf("synchronize: %d %s", code, msg)
		}
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 8, Head: a, Base: base})); code != http.StatusAccepted {
			t.Fatalf("opened: %d %s", code, msg)
		}
		runs := g.settle(t, b, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success"})
		if old := g.runsOn(a); len(old) != 0 {
			t.Fatalf("the older head, delivered late, got check runs: %v", names(old))
		}
	})

	t.Run("re-run after a fix", func(t *testing.T) {
		fix := markerDir(t)
		r, base, head := g.repo(t, "rerun", map[string]string{".ekaci/config.json": cfgJSON, "default.nix": nixFile([]string{"s"}, nil, nil)},
			map[string]string{"default.nix": fixableNix(fix)})
		if code, msg := g.deliver(t, "pull_request", githubtest.PullRequest(r, "opened", githubtest.PR{Number: 9, Head: head, Base: base})); code != http.StatusAccepted {
			t.Fatalf("opened: %d %s", code, msg)
		}
		attr := checkname.Attr("needsfix", "pkgs")
		runs := g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "failure", attr: "failure"})
		if err := os.WriteFile(filepath.Join(fix, "fixed"), nil, 0o666); err != nil {
			t.Fatal(err)
		}
		pr := githubtest.PR{Number: 9, Head: head, Base: base}
		if code, msg := g.deliver(t, "check_run", githubtest.CheckRunEvent(r, "rerequested", runs[attr].ID, attr, head, pr, "", "octocat")); code != http.StatusAccepted {
			t.Fatalf("rerequested: %d %s", code, msg)
		}
		waitRun(t, g, head, gate, func(cr githubtest.CheckRun) bool { return cr.Conclusion == "success" })
		runs = g.settle(t, head, gate)
		expectRuns(t, runs, map[string]string{checkname.Configure: "success", gate: "success", attr: "success"})
	})

	t.Run("installation removed", func(t *testing.T) {
		if code, msg := g.deliver(t, "installation", githubtest.Installation(11, "octo", "deleted", false)); code != http.StatusAccepted {
			t.Fatalf("installation deleted: %d %s", code, msg)
		}
		g.gh.Uninstall(11)
		head := strings.Repeat("c", 40)
		code, _ := g.deliver(t, "pull_request", githubtest.PullRequest(cleanRepo, "synchronize", githubtest.PR{Number: 1, Head: head, Base: cleanPR.Base, Before: cleanPR.Head}))
		if code != http.StatusForbidden {
			t.Fatalf("delivery for a removed installation: %d, want 403", code)
		}
		if runs := g.runsOn(head); len(runs) != 0 {
			t.Fatalf("check runs for a removed installation: %v", names(runs))
		}
	})
}

// builds counts the build attempts started so far.
func builds(t *testing.T, log *eventlog.Log) int {
	t.Helper()
	n := 0
	err := log.Read(context.Background(), 0, []string{eventlog.FactFilter(eventlog.Drv, "build_started")}, func(eventlog.Record) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// markerDir is a directory builders (nixbld users) can see and the test
// writes a marker into.
func markerDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ekaci-gh-marker-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitingNix is one derivation (named by v) that waits, up to 60 s, for
// <dir>/open before it succeeds: a build still running when its head is
// superseded.
func waitingNix(v, dir string) string {
	return `{ slow = derivation {
    name = "slow-` + v + `";
    system = builtins.currentSystem;
    salt = "@SALT@";
    PATH = "/usr/bin:/bin";
    builder = "/bin/sh";
    args = [ "-c" "i=0; while [ ! -e ` + dir + `/open ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo ok > $out" ];
  }; }
`
}

// fixableNix is a derivation that fails until <dir>/fixed exists (a fix
// outside the repository, as a broken machine being repaired).
func fixableNix(dir string) string {
	return `{ needsfix = derivation {
    name = "needsfix";
    system = builtins.currentSystem;
    salt = "@SALT@";
    builder = "/bin/sh";
    args = [ "-c" "if [ -e ` + dir + `/fixed ]; then echo ok > $out; else echo 'error: not fixed yet' >&2; exit 1; fi" ];
  }; }
`
}

// waitRun waits until the named run on head satisfies ok.
func waitRun(t *testing.T, g *ghHarness, head, name string, ok func(githubtest.CheckRun) bool) githubtest.CheckRun {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if cr, found := g.runsOn(head)[name]; found && ok(cr) {
			return cr
		}
		if time.Now().After(deadline) {
			t.Fatalf("check run %s on %s never got there: %+v", name, head[:8], g.runsOn(head)[name])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
