package checkrun_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubtest"
	"github.com/ekaci/ekaci/services/notifier/checkrun"
)

const (
	head     = "1111111111111111111111111111111111111111"
	changeID = "c0ffee0000000000000000000000000000000000"
	jobsetID = "j0b5e70000000000000000000000000000000000"
)

func drvPath(name string) string {
	return "/nix/store/" + strings.Repeat("a", 31) + fmt.Sprint(len(name)%10) + "-" + name + ".drv"
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	log *eventlog.Log
	gh  *githubtest.Server
	app *githubapp.App
	dir string
}

func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	gh := githubtest.New(t)
	gh.Install(11, "octo/repo")
	app, err := githubapp.New(githubapp.Config{AppID: gh.AppID, PrivateKey: gh.PrivateKeyPEM(), BaseURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, log: eventlog.New(eventlogtest.JetStream(t, ctx)), gh: gh, app: app, dir: t.TempDir()}
}

func (f *fixture) publisher() *checkrun.Publisher {
	p, err := checkrun.Open(checkrun.Config{Events: f.log, Logger: zerolog.Nop(), App: f.app, DataDir: f.dir, MaxAttrRuns: 5,
		Retry: githubapp.Retry{Backoff: 10 * time.Millisecond}})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func rec(id string, ev *eventsv1.Event) eventlog.Record { return eventlog.Record{ID: id, Event: ev} }

// history is a GitHub pull request's change: one job whose new attribute
// `openssl` failed and broke 20 new dependents, plus an unchanged
// attribute that fails on the base too.
func history() []eventlog.Record {
	results := []*eventsv1.AttrResult{
		{Attr: "openssl", DrvPath: drvPath("openssl-3.0"), State: "failed", Difference: eventsv1.Difference_DIFFERENCE_NEW, Error: "make: *** [all] Error 2"},
		{Attr: "legacy", DrvPath: drvPath("legacy-1"), State: "failed", Difference: eventsv1.Difference_DIFFERENCE_UNCHANGED},
		{Attr: "hello", DrvPath: drvPath("hello-1"), State: "succeeded", Difference: eventsv1.Difference_DIFFERENCE_CHANGED},
	}
	for i := 0; i < 20; i++ {
		results = append(results, &eventsv1.AttrResult{Attr: fmt.Sprintf("dep%02d", i), DrvPath: drvPath(fmt.Sprintf("dep%02d", i)),
			State: "transitive-failure", Cause: drvPath("openssl-3.0"), Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Attr < results[j].Attr })
	return []eventlog.Record{
		rec(changeID, &eventsv1.Event{Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{
			RepoUrl: "https://github.com/octo/repo.git", HeadCommit: head, BaseCommit: strings.Repeat("2", 40), Source: "webhook",
			Github: &eventsv1.GitHubOrigin{InstallationId: 11, Owner: "octo", Repo: "repo", PullRequest: 7, Event: "pull_request"}}}}),
		rec(changeID, &eventsv1.Event{Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Jobs: []string{"packages"}, Configured: true}}}),
		rec(jobsetID, &eventsv1.Event{Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: changeID, Job: "packages", File: "release.nix"}}}),
		rec(jobsetID, &eventsv1.Event{Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: changeID, DrvCount: 30, AttrCount: 23}}}),
		rec(jobsetID, &eventsv1.Event{Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{ChangeId: changeID, Job: "packages",
			Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE, Results: results,
			Counts: map[string]uint32{"failed": 2, "succeeded": 1, "transitive-failure": 20}}}}),
	}
}

func (f *fixture) handleAll(p *checkrun.Publisher, recs []eventlog.Record) {
	f.t.Helper()
	for _, r := range recs {
		if err := p.Handle(f.ctx, r); err != nil {
			f.t.Fatalf("Handle(%T): %v", r.Event.GetPayload(), err)
		}
	}
}

func byName(runs []githubtest.CheckRun) map[string]githubtest.CheckRun {
	m := map[string]githubtest.CheckRun{}
	for _, r := range runs {
		m[r.Name] = r
	}
	return m
}

func TestPullRequestWithARootCause(t *testing.T) {
	f := newFixture(t)
	// The root cause's own failure, as the recorder appended it.
	id, _ := eventlog.DrvID(drvPath("openssl-3.0"))
	if _, err := f.log.Append(f.ctx, id, &eventsv1.Event{Id: "failed-" + id, Payload: &eventsv1.Event_DrvBuildFailed{
		DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 2, ExitCode: 1, LogTail: "checking for cc... no\nerror: no C compiler"}}}); err != nil {
		t.Fatal(err)
	}
	p := f.publisher()
	defer p.Close()
	f.handleAll(p, history())
	runs := byName(f.gh.CheckRuns())
	gate := runs["ekaci: packages"]
	if gate.Conclusion != "failure" || gate.Title != "21 new or changed attributes failed (1 root cause)" {
		t.Errorf("gate = %q %q, want failure with 21 attributes and 1 root cause", gate.Conclusion, gate.Title)
	}
	for _, want := range []string{"`openssl` failed, and 20 attributes that depend on it", "no C compiler", "logs/" + id + "/2.log.zst",
		"### Already failing on the base branch", "`legacy` failed", "and 10 more"} {
		if !strings.Contains(gate.Summary, want) {
			t.Errorf("gate summary lacks %q:\n%s", want, gate.Summary)
		}
	}
	if os.Getenv("PRINT") != "" {
		fmt.Println(gate.Title + "\n" + gate.Summary)
		fmt.Println(runs["dep00 (packages)"].Title + "\n" + runs["dep00 (packages)"].Summary)
	}
	if strings.Count(gate.Summary, "depend on it") != 1 {
		t.Errorf("the root cause is not one line:\n%s", gate.Summary)
	}
	if c := runs["ekaci: configure"]; c.Conclusion != "success" || c.Title != "1 jobs" {
		t.Errorf("configure = %+v", c)
	}
	// 21 failed new attributes, at most 5 runs (MaxAttrRuns), the rest said.
	attrRuns := 0
	for name, r := range runs {
		if strings.HasSuffix(name, " (packages)") {
			attrRuns++
			if r.Conclusion != "failure" || r.Status != "completed" {
				t.Errorf("attribute run %s: %s %s", name, r.Status, r.Conclusion)
			}
		}
	}
	if attrRuns != 5 || !strings.Contains(gate.Summary, "16 failed attributes got no check run of their own") {
		t.Errorf("%d attribute runs, want 5 and the gate saying 16 were left out", attrRuns)
	}
	if _, ok := runs["legacy (packages)"]; ok {
		t.Error("a failure already on the base got a run of its own")
	}
	calls := len(f.gh.Calls())

	// Replayed facts: nothing new.
	f.handleAll(p, history())
	if n := len(f.gh.Calls()); n != calls {
		t.Fatalf("replaying the facts made %d more API calls", n-calls)
	}
	p.Close()

	// A notifier whose read model was lost (a crash between creating a run
	// and recording it, at worst) finds its runs again by external id.
	if err := os.Remove(filepath.Join(f.dir, "notifier-github.db")); err != nil {
		t.Fatal(err)
	}
	p2 := f.publisher()
	defer p2.Close()
	f.handleAll(p2, history())
	if n, want := len(f.gh.CheckRuns()), len(runs); n != want {
		t.Fatalf("%d check runs after a restart without the read model, want %d (none twice)", n, want)
	}
}

func TestFaultsAreRetriedAndRefusalsDropped(t *testing.T) {
	f := newFixture(t)
	p := f.publisher()
	defer p.Close()
	h := history()
	f.gh.Inject(githubtest.Fault{Status: 502, RetryAfter: time.Second, Path: "/check-runs"},
		githubtest.Fault{Status: 403, RateLimitReset: time.Now().Add(time.Second), Path: "/check-runs"})
	f.handleAll(p, h[:1])
	if f.gh.FaultsLeft() != 0 {
		t.Fatal("faults not reached")
	}
	if runs := f.gh.CheckRuns(); len(runs) != 1 || runs[0].Name != "ekaci: configure" || runs[0].Status != "in_progress" {
		t.Fatalf("runs after retries: %+v, want one configure run in progress", runs)
	}
	// A refusal (422) is logged and dropped, not retried forever.
	f.gh.Inject(githubtest.Fault{Status: 422, Path: "/check-runs"})
	if err := p.Handle(f.ctx, h[1]); err != nil {
		t.Fatalf("a refused update: %v, want it dropped", err)
	}
	if runs := f.gh.CheckRuns(); runs[0].Status != "in_progress" {
		t.Fatalf("refused update applied: %+v", runs[0])
	}
}

func TestChangesNotFromGitHubAreLeftAlone(t *testing.T) {
	f := newFixture(t)
	p := f.publisher()
	defer p.Close()
	h := history()
	h[0].Event.GetChangeRequested().Github = nil
	f.handleAll(p, h)
	if runs := f.gh.CheckRuns(); len(runs) != 0 {
		t.Fatalf("%d check runs for a change from the CLI", len(runs))
	}
}

// TestCheckRuns: each check of a change gets "ekaci: check <name>",
// queued, then running, then completed: success, failure, neutral when
// the base fails it too, failure for a limit.
func TestCheckRuns(t *testing.T) {
	f := newFixture(t)
	p := f.publisher()
	defer p.Close()
	checkID := func(name string) string { return eventlog.CheckID(changeID, name) }
	head := func(exit int32) *eventsv1.CheckRun {
		return &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_HEAD, ExitCode: exit, DurationMs: 1500, Log: "x/1.log.zst"}
	}
	recs := history()[:2]
	for _, name := range []string{"lint", "style", "test", "fuzz"} {
		recs = append(recs,
			rec(checkID(name), &eventsv1.Event{Payload: &eventsv1.Event_CheckQueued{CheckQueued: &eventsv1.CheckQueued{ChangeId: changeID, Name: name, Command: "./ci/" + name + ".sh"}}}),
			rec(checkID(name), &eventsv1.Event{Payload: &eventsv1.Event_CheckStarted{CheckStarted: &eventsv1.CheckStarted{ChangeId: changeID, Name: name, Attempt: 1, Checker: "local-1"}}}))
	}
	f.handleAll(p, recs)
	if r := byName(f.gh.CheckRuns())["ekaci: check lint"]; r.Status != "in_progress" || r.Title != "Running" {
		t.Errorf("a started check's run: %s %q", r.Status, r.Title)
	}
	f.handleAll(p, []eventlog.Record{
		rec(checkID("lint"), &eventsv1.Event{Payload: &eventsv1.Event_CheckSucceeded{CheckSucceeded: &eventsv1.CheckSucceeded{ChangeId: changeID, Name: "lint", Attempt: 1, Head: head(0)}}}),
		rec(checkID("style"), &eventsv1.Event{Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{ChangeId: changeID, Name: "style", Attempt: 1, Head: head(1),
			OutputTail: "main.c:3: too long", Base: &eventsv1.CheckRun{Revision: eventsv1.CheckRevision_CHECK_REVISION_BASE, ExitCode: 1}, BaseFailed: true}}}),
		rec(checkID("test"), &eventsv1.Event{Payload: &eventsv1.Event_CheckFailed{CheckFailed: &eventsv1.CheckFailed{ChangeId: changeID, Name: "test", Attempt: 1, Head: head(3), OutputTail: "FAIL: test_add"}}}),
		rec(checkID("fuzz"), &eventsv1.Event{Payload: &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{ChangeId: changeID, Name: "fuzz", Attempt: 1,
			Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_MEMORY, Detail: "killed at its memory limit of 2048 MiB", Head: head(-1)}}}),
	})
	runs := byName(f.gh.CheckRuns())
	for name, want := range map[string]struct{ conclusion, title, summary string }{
		"lint":  {"success", "Passed", "Log: `logs/x/1.log.zst`"},
		"style": {"neutral", "Failed with exit code 1, as on the base", "does not pass it either"},
		"test":  {"failure", "Failed with exit code 3", "FAIL: test_add"},
		"fuzz":  {"failure", "Stopped: memory", "memory limit of 2048 MiB"},
	} {
		r := runs["ekaci: check "+name]
		if r.Status != "completed" || r.Conclusion != want.conclusion || r.Title != want.title || !strings.Contains(r.Summary, want.summary) {
			t.Errorf("check %s: %s %s %q %q, want completed %s %q with %q", name, r.Status, r.Conclusion, r.Title, r.Summary, want.conclusion, want.title, want.summary)
		}
	}
}
