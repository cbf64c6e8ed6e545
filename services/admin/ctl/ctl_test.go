package ctl_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/admin"
	"github.com/ekaci/ekaci/services/admin/ctl"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with what ekactl prints now")

const (
	change  = "c0ffee00c0ffee00c0ffee00c0ffee00"
	good    = "0000000000000000000000000000good"
	bad     = "00000000000000000000000000000bad"
	usesBad = "0000000000000000000000000usesbad"
	pending = "9e9d1a9000000000000000000000beef"
)

// fixture is an admin server over a real event log holding one concluded
// change: good built, bad failed twice, usesBad failed with it, and an
// attribute that did not evaluate; approvals (mallory revoked, but in the
// webhook's configured list with Friend) and two builders, one drained.
type fixture struct {
	sock    string
	jobset  string
	dataDir string
	lis     admin.Listening // also TCP (token fixtureToken) and logs over HTTP
}

const fixtureToken = "s3cret"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	jobset := eventlog.JobsetID(change, "main")
	put := func(id string, ev *eventsv1.Event) {
		t.Helper()
		if _, err := log.Append(ctx, id, ev); err != nil {
			t.Fatal(err)
		}
	}
	path := func(id, name string) string { return "/nix/store/" + id + "-" + name + ".drv" }
	put(change, &eventsv1.Event{Id: "req", Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{
		RepoUrl: "https://example.invalid/acme/widgets.git", RepoName: "acme/widgets", HeadCommit: strings.Repeat("a", 40), BaseCommit: strings.Repeat("b", 40), Source: "webhook",
		Github: &eventsv1.GitHubOrigin{PullRequest: 42}}}})
	put(change, &eventsv1.Event{Id: "co", Payload: &eventsv1.Event_ChangeCheckedOut{ChangeCheckedOut: &eventsv1.ChangeCheckedOut{}}})
	put(change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"main"}}}})
	put(jobset, &eventsv1.Event{Id: "cr", Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: change, Job: "main"}}})
	put(good, &eventsv1.Event{Id: "d-good", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path(good, "good"), System: "x86_64-linux", Name: "good"}}})
	put(bad, &eventsv1.Event{Id: "d-bad", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path(bad, "bad"), System: "x86_64-linux", Name: "bad"}}})
	put(usesBad, &eventsv1.Event{Id: "d-uses", Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path(usesBad, "uses-bad"), System: "x86_64-linux", Name: "uses-bad", InputDrvs: []string{bad}}}})
	attr := func(name, id string, diff eventsv1.Difference) *eventsv1.JobAttr {
		return &eventsv1.JobAttr{Attr: name, DrvId: id, DrvPath: path(id, name), Difference: diff}
	}
	put(jobset, &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change, Attrs: []*eventsv1.JobAttr{
		attr("bad", bad, eventsv1.Difference_DIFFERENCE_NEW), {Attr: "broken", EvalError: "error: undefined variable 'x'", Difference: eventsv1.Difference_DIFFERENCE_CHANGED},
		attr("good", good, eventsv1.Difference_DIFFERENCE_UNCHANGED), attr("usesBad", usesBad, eventsv1.Difference_DIFFERENCE_NEW)}}}})
	put(good, &eventsv1.Event{Id: "c-good", Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}})
	for attempt := uint32(1); attempt <= 2; attempt++ {
		put(bad, &eventsv1.Event{Id: "b-bad-" + string(rune('0'+attempt)), Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: attempt}}})
		put(bad, &eventsv1.Event{Id: "s-bad-" + string(rune('0'+attempt)), Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: attempt, Builder: "local", Holder: "host-1"}}})
		if attempt == 1 {
			put(bad, &eventsv1.Event{Id: "fr-bad", Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{Attempt: 1, ExitCode: 1, LogTail: "nope", DurationMs: 40}}})
			put(bad, &eventsv1.Event{Id: "rq-bad", Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "retry", NextAttempt: 2}}})
		}
	}
	put(bad, &eventsv1.Event{Id: "f-bad", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 2, ExitCode: 1, LogTail: "nope", DurationMs: 42}}})
	put(usesBad, &eventsv1.Event{Id: "df-uses", Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{CauseDrvId: bad, CauseDrvPath: path(bad, "bad")}}})
	put(jobset, &eventsv1.Event{Id: "jc", Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{ChangeId: change, Job: "main", Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE,
		Counts: map[string]uint32{"succeeded": 1, "failed": 1, "transitive-failure": 1, "eval-error": 1}}}})
	// Approvals: octocat approved; mallory approved, then revoked.
	op := &eventsv1.Actor{Who: "unix:carol", Source: action.SourceAdmin, Reason: "known contributor"}
	for _, do := range []func() (action.Result, error){
		func() (action.Result, error) { return action.Approve(ctx, log, "OctoCat", op) },
		func() (action.Result, error) { return action.Approve(ctx, log, "mallory", op) },
		func() (action.Result, error) {
			return action.Revoke(ctx, log, "mallory", &eventsv1.Actor{Who: "unix:carol", Source: action.SourceAdmin, Reason: "spam"})
		},
	} {
		if _, err := do(); err != nil {
			t.Fatal(err)
		}
	}
	// Two builders alive, as their heartbeats say (the bucket and fields
	// of services/builder's holders): local, and big, drained.
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ekaci_holders"})
	if err != nil {
		t.Fatal(err)
	}
	for key, hb := range map[string]string{
		"host-1": `{"builder":"local","host":"ci-1","pid":7,"since":"2026-12-07T10:00:00Z","slots":4}`,
		"big-1":  `{"builder":"big","host":"ci-2","pid":8,"since":"2026-12-07T10:00:00Z","slots":16,"drained":true}`,
	} {
		if _, err := kv.Put(ctx, key, []byte(hb)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"big", "gone"} { // gone: drained, no process runs under it
		if _, err := action.Drain(ctx, log, name, op); err != nil {
			t.Fatal(err)
		}
	}
	a, err := log.Append(ctx, change, &eventsv1.Event{Id: "cc", Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Summary: "1 of 1 jobs failed", JobsetIds: []string{jobset}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Another change, requested and configured, not yet checked out.
	put(pending, &eventsv1.Event{Id: "req-p", Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{
		RepoUrl: "https://example.invalid/acme/widgets.git", RepoName: "acme/widgets", HeadCommit: strings.Repeat("c", 40), Source: "cli"}}})
	// bad's log, as its builder published it (no file: the stream has it).
	for _, line := range []string{"building '/nix/store/bad.drv'...", "nope"} {
		if _, err := js.Publish(ctx, eventlog.LogSubject(bad, 2), []byte(line)); err != nil {
			t.Fatal(err)
		}
	}

	sock, dataDir := filepath.Join(t.TempDir(), "admin.sock"), t.TempDir()
	ready := make(chan admin.Listening, 1)
	done := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	go func() {
		done <- admin.Run(rctx, admin.Config{Events: log, DataDir: dataDir, Socket: sock, Logger: zerolog.Nop(), Ready: func(l admin.Listening) { ready <- l },
			Addr: "127.0.0.1:0", Token: fixtureToken, HTTPAddr: "127.0.0.1:0", Approved: []string{"Friend", "mallory"}})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("admin.Run: %v", err)
		}
	})
	var lis admin.Listening
	select {
	case lis = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := adminv1.NewAdminClient(conn).ListChanges(ctx, &adminv1.ListChangesRequest{AfterSeq: a.Seq}); err != nil {
		t.Fatal(err)
	}
	return &fixture{sock: sock, jobset: jobset, dataDir: dataDir, lis: lis}
}

// ekactl runs the command line and returns its status, stdout and stderr.
func (f *fixture) ekactl(t *testing.T, env map[string]string, terminal bool, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "USER" {
			return "tester"
		}
		return env[k]
	}
	code := ctl.Run(context.Background(), append([]string{"--server", "unix://" + f.sock}, args...), ctl.Env{Stdout: &out, Stderr: &errb, Getenv: getenv, IsTerminal: terminal})
	return code, out.String(), errb.String()
}

var stamps = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// golden compares got (times replaced by <time>) with testdata/name.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = stamps.ReplaceAllString(got, "<time>")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// TestOutput: each command's table and JSON, against golden files.
func TestOutput(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		golden   string
		args     []string
		env      map[string]string
		terminal bool
	}{
		{"changes", []string{"changes"}, nil, false},
		{"changes.json", []string{"changes", "-o", "json"}, nil, false},
		{"change", []string{"change", change}, nil, false},
		{"jobset", []string{"jobset", f.jobset}, nil, false},
		{"jobset-failed", []string{"jobset", f.jobset, "--state", "failed"}, nil, false},
		{"jobset-failed-color", []string{"jobset", f.jobset, "--state", "failed"}, nil, true},
		{"jobset-failed-no-color", []string{"jobset", f.jobset, "--state", "failed"}, map[string]string{"NO_COLOR": "1"}, true},
		{"drv", []string{"drv", bad}, nil, false},
		{"drv-history", []string{"drv", "/nix/store/" + bad + "-bad.drv", "--history"}, nil, false},
		{"drv.json", []string{"drv", usesBad, "-o", "json"}, nil, false},
		{"failures", []string{"failures", f.jobset}, nil, false},
		{"failures.json", []string{"failures", f.jobset, "-o", "json"}, nil, false},
		{"logs", []string{"logs", bad}, nil, false},
		{"watch", []string{"watch", f.jobset}, nil, false},
		{"watch-terminal", []string{"watch", f.jobset}, map[string]string{"NO_COLOR": "1"}, true},
		{"builders", []string{"builders"}, nil, false},
		{"approvals", []string{"approvals"}, nil, false},
		{"approvals.json", []string{"approvals", "-o", "json"}, nil, false},
		{"builders.json", []string{"builders", "-o", "json"}, nil, false},
		{"rebuild-readmodel", []string{"rebuild-readmodel", "admin"}, nil, false},
		{"rebuild-readmodel.json", []string{"rebuild-readmodel", "admin", "-o", "json"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			code, out, errs := f.ekactl(t, tt.env, tt.terminal, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			golden(t, tt.golden, out)
		})
	}
}

// TestErrors: a refused call exits 1 with the server's code and message;
// a bad command line exits 2 saying what is wrong.
func TestErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown jobset", []string{"jobset", "nothere"}, 1, "ekactl jobset: NotFound: jobset nothere: not found"},
		{"retry a success", []string{"retry", good}, 1, "ekactl retry: FailedPrecondition:"},
		{"bad state", []string{"jobset", f.jobset, "--state", "melted"}, 1, "InvalidArgument: state:"},
		{"missing argument", []string{"drv"}, 2, "accepts 1 arg(s), received 0"},
		{"bad output", []string{"changes", "-o", "yaml"}, 2, `--output "yaml": want table or json`},
		{"cancel what", []string{"cancel", "build", "x"}, 2, `cancel "build": want jobset or change`},
		{"approve, not a login", []string{"approve", "a.b"}, 1, "ekactl approve: InvalidArgument: invalid argument: login"},
		{"revoke, never approved", []string{"revoke", "stranger"}, 1, "ekactl revoke: NotFound: revoke stranger: no approval of it was recorded"},
		{"approve, no login", []string{"approve"}, 2, "accepts 1 arg(s), received 0"},
		{"drain, unknown builder", []string{"drain", "nosuch"}, 1, `ekactl drain: NotFound: builder "nosuch": no builder process of that name is alive`},
		{"resume, not drained", []string{"resume", "local"}, 1, "ekactl resume: FailedPrecondition: resume local: wrong state for this action: it is not drained"},
		{"drain, no name", []string{"drain"}, 2, "accepts 1 arg(s), received 0"},
		{"rebuild, unknown model", []string{"rebuild-readmodel", "recorder"}, 1, `ekactl rebuild-readmodel: NotFound: read model "recorder": not found (this server rebuilds admin`},
		{"rebuild, empty name", []string{"rebuild-readmodel", ""}, 1, "ekactl rebuild-readmodel: InvalidArgument: name: empty"},
		{"no server", []string{"--server", "unix:///nonexistent/admin.sock", "changes", "--timeout", "2s"}, 1, "Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := f.ekactl(t, nil, false, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", code, errs, tt.code, tt.want)
			}
		})
	}
}

// TestActions: retry records the actor and reason, and the read after it
// shows the derivation queued again; completion scripts are produced.
func TestActions(t *testing.T) {
	f := newFixture(t)
	code, out, errs := f.ekactl(t, nil, false, "retry", bad, "--reason", "runner fixed")
	if code != 0 || !strings.Contains(out, "retried "+bad+" (fact ") || !strings.Contains(out, "as unix:tester") {
		t.Fatalf("retry: exit %d, %q %q", code, out, errs)
	}
	seq := regexp.MustCompile(`--after (\d+)`).FindStringSubmatch(out)
	if seq == nil {
		t.Fatalf("retry printed no --after: %q", out)
	}
	code, out, _ = f.ekactl(t, nil, false, "drv", bad, "--history", "--after", seq[1])
	if code != 0 || !strings.Contains(out, "requeued") || !strings.Contains(out, "unix:tester") {
		t.Fatalf("drv after retry: %q", out)
	}
	// approve, revoke, and the approval list after each.
	for _, step := range []struct {
		args    []string
		printed string
		listed  string
	}{
		{[]string{"approve", "newcomer", "--reason", "first PR looked fine"}, "approved newcomer (fact ", "newcomer approved - unix:tester first PR looked fine"},
		{[]string{"approve", "NewComer"}, "approved NewComer already (fact ", "newcomer approved"},
		{[]string{"revoke", "newcomer", "--reason", "spam"}, "revoked newcomer (fact ", "newcomer revoked - unix:tester spam"},
	} {
		code, out, errs := f.ekactl(t, nil, false, step.args...)
		if code != 0 || !strings.Contains(out, step.printed) {
			t.Fatalf("%v: exit %d, %q %q; want %q", step.args, code, out, errs, step.printed)
		}
		seq := regexp.MustCompile(`fact (\d+)`).FindStringSubmatch(out)
		code, out, errs = f.ekactl(t, nil, false, "approvals", "--after", seq[1])
		if code != 0 || !hasRow(out, step.listed) {
			t.Fatalf("approvals after %v: exit %d, %q %q; want a row %q", step.args, code, out, errs, step.listed)
		}
	}
	// drain and resume, and the builders after each.
	for _, step := range []struct {
		args    []string
		printed string
		listed  string
	}{
		{[]string{"drain", "local", "--reason", "disk full"}, "drained local (fact ", "host-1 local ci-1 <time> drained 0 4 unix:tester"},
		{[]string{"drain", "local"}, "drained local already (fact ", "host-1 local ci-1 <time> drained 0 4 unix:tester"},
		{[]string{"resume", "local"}, "resumed local (fact ", "host-1 local ci-1 <time> active 0 4 -"},
	} {
		code, out, errs := f.ekactl(t, nil, false, step.args...)
		if code != 0 || !strings.Contains(out, step.printed) {
			t.Fatalf("%v: exit %d, %q %q; want %q", step.args, code, out, errs, step.printed)
		}
		seq := regexp.MustCompile(`fact (\d+)`).FindStringSubmatch(out)
		code, out, errs = f.ekactl(t, nil, false, "builders", "--after", seq[1])
		if code != 0 || !hasRow(out, step.listed) {
			t.Fatalf("builders after %v: exit %d, %q %q; want a row with %q", step.args, code, out, errs, step.listed)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := f.ekactl(t, nil, false, "completion", sh)
		if code != 0 || !strings.Contains(out, "ekactl") {
			t.Fatalf("completion %s: exit %d, %q", sh, code, errs)
		}
	}
}

// TestReadmeExamples runs the ekactl lines of README's Administering
// section, with the fixture's ids for its placeholders: each must succeed.
func TestReadmeExamples(t *testing.T) {
	f := newFixture(t)
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "## Administering")
	if start < 0 {
		t.Fatal("README has no Administering section")
	}
	text = text[start+3:]
	text = text[:strings.Index(text, "\n## ")]
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "ekactl ") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 10 {
		t.Fatalf("found %d ekactl examples, want the section's", len(lines))
	}
	seq := ""
	for _, l := range lines {
		l = strings.NewReplacer("/var/lib/ekaci/admin.sock", f.sock, "CHANGE", change, "JOBSET", f.jobset, "DRV", bad, "PENDING", pending, "SEQ", seq).Replace(l)
		args, err := split(strings.TrimPrefix(l, "ekactl "))
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		code, out, errs := f.ekactl(t, nil, false, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", l, code, errs)
		}
		if m := regexp.MustCompile(`--after (\d+)`).FindStringSubmatch(out); m != nil {
			seq = m[1]
		}
	}
}

// split splits a command line as sh does for words and double quotes.
func split(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

// TestPaging: changes come a page at a time, newest first, each page
// pointing to the next until the last.
func TestPaging(t *testing.T) {
	f := newFixture(t)
	code, out, errs := f.ekactl(t, nil, false, "changes", "--limit", "1")
	m := regexp.MustCompile(`--page (\d+)`).FindStringSubmatch(errs)
	if code != 0 || !strings.Contains(out, pending) || strings.Contains(out, change) || m == nil {
		t.Fatalf("first page: exit %d, %q, %q; want the newest change and a pointer to the next page", code, out, errs)
	}
	code, out, errs = f.ekactl(t, nil, false, "changes", "--limit", "1", "--page", m[1])
	if code != 0 || !strings.Contains(out, change) || strings.Contains(out, pending) || strings.Contains(errs, "--page") {
		t.Fatalf("second page: exit %d, %q, %q; want the older change and no further page", code, out, errs)
	}
}

// reads is every read the fixture's model answers, in order.
func (f *fixture) reads(t *testing.T, c adminv1.AdminClient) []proto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []proto.Message
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	add(c.ListChanges(ctx, &adminv1.ListChangesRequest{}))
	add(c.GetChange(ctx, &adminv1.GetChangeRequest{Id: change}))
	add(c.GetChange(ctx, &adminv1.GetChangeRequest{Id: pending}))
	js, err := c.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: f.jobset})
	add(js, err)
	add(c.ListFailures(ctx, &adminv1.ListFailuresRequest{JobsetId: f.jobset}))
	for _, id := range []string{good, bad, usesBad} {
		add(c.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: id}))
	}
	add(c.ListApprovals(ctx, &adminv1.ListApprovalsRequest{}))
	add(c.ListBuilders(ctx, &adminv1.ListBuildersRequest{}))
	return out
}

// TestRebuildReadModel: the model rebuilt from the log answers every read
// exactly as the one it replaced, is the file the next start opens, and
// goes on folding: an action after the rebuild shows in the read after it.
func TestRebuildReadModel(t *testing.T) {
	f := newFixture(t)
	conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := adminv1.NewAdminClient(conn)
	before := f.reads(t, c)
	first := inode(t, filepath.Join(f.dataDir, "admin.db"))
	for round := 1; round <= 2; round++ { // the second replaces a rebuilt model
		code, out, errs := f.ekactl(t, nil, false, "rebuild-readmodel", "admin")
		if code != 0 || !strings.Contains(out, "rebuilt admin from the event log: ") {
			t.Fatalf("rebuild %d: exit %d, %q %q", round, code, out, errs)
		}
		after := f.reads(t, c)
		for i := range before {
			if !proto.Equal(before[i], after[i]) {
				t.Fatalf("rebuild %d: read %d differs:\nbefore %v\nafter  %v", round, i, before[i], after[i])
			}
		}
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "admin.db.rebuild")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the rebuild's file is still there under its own name: %v", err)
	}
	if now := inode(t, filepath.Join(f.dataDir, "admin.db")); now == first {
		t.Fatal("admin.db is the file the server started with: the rebuilt one is not where the next start opens it")
	}
	code, out, errs := f.ekactl(t, nil, false, "approve", "afterwards")
	seq := regexp.MustCompile(`fact (\d+)`).FindStringSubmatch(out)
	if code != 0 || seq == nil {
		t.Fatalf("approve after the rebuild: exit %d, %q %q", code, out, errs)
	}
	code, out, errs = f.ekactl(t, nil, false, "approvals", "--after", seq[1])
	if code != 0 || !strings.Contains(out, "afterwards") {
		t.Fatalf("approvals after the rebuild and an approval: exit %d, %q %q", code, out, errs)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// readmeSection returns the lines of README's Administering section that
// start with one of prefixes.
func readmeSection(t *testing.T, prefixes ...string) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "## Administering")
	if start < 0 {
		t.Fatal("README has no Administering section")
	}
	text = text[start+3:]
	text = text[:strings.Index(text, "\n## ")]
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// TestReadmeClients runs the grpcurl, grpc-health-probe and curl lines of
// README's Administering section through bash against the fixture's
// server (its socket, TCP with the token, logs over HTTP): each must
// exit 0 and print what the call answers. The clients are built from
// testdata/tools, pinned there and kept out of the workspace.
func TestReadmeClients(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/fullstorydev/grpcurl/cmd/grpcurl", "github.com/grpc-ecosystem/grpc-health-probe")
	build.Dir = filepath.Join("..", "testdata", "tools")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the README's clients in testdata/tools: %v\n%s", err, out)
	}
	f := newFixture(t)
	lines := readmeSection(t, "grpcurl ", "grpc-health-probe ", "curl ")
	// What each call prints when it did what the README says.
	want := []struct{ in, out string }{
		{" list", "ekaci.admin.v1.Admin"},
		{" describe ", "rpc RebuildReadModel"},
		{"/ListChanges", change},
		{"/ApproveContributor", `"seq"`},
		{"/ListApprovals", `"login": "hubot"`},
		{"/DrainBuilder", `"seq"`},
		{"/ListBuilders", `"reason": "disk full"`}, // local, drained by the line before
		{"/ResumeBuilder", `"seq"`},
		{"/RebuildReadModel", `"rows"`},
		{"grpc-health-probe ", "SERVING"},
		{"curl ", "nope"},
	}
	if len(lines) != len(want) {
		t.Fatalf("README shows %d client lines, the test knows %d: %q", len(lines), len(want), lines)
	}
	seq := ""
	for i, l := range lines {
		cmd := strings.NewReplacer("/var/lib/ekaci/admin.sock", f.sock, "127.0.0.1:7070", f.lis.Addr, "127.0.0.1:7071", f.lis.HTTPAddr,
			"TOKEN", fixtureToken, "DRV", bad, "SEQ", seq).Replace(l)
		sh := exec.Command("bash", "-c", cmd)
		sh.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := sh.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", l, err, out)
		}
		if !strings.Contains(l, want[i].in) || !strings.Contains(string(out), want[i].out) {
			t.Fatalf("%s printed %q; want the line to hold %q and print %q", l, out, want[i].in, want[i].out)
		}
		if m := regexp.MustCompile(`"seq": "(\d+)"`).FindStringSubmatch(string(out)); m != nil && strings.Contains(l, " -d ") && !strings.Contains(l, "after_seq") {
			seq = m[1] // an action's
		}
	}
}

// hasRow reports whether a table line starts with the words of want
// (times read as <time>), whatever the columns' widths.
func hasRow(table, want string) bool {
	for _, l := range strings.Split(stamps.ReplaceAllString(table, "<time>"), "\n") {
		if strings.HasPrefix(strings.Join(strings.Fields(l), " ")+" ", want+" ") {
			return true
		}
	}
	return false
}
