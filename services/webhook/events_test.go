package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
	"github.com/ekaci/ekaci/libs/githubtest"
	"github.com/ekaci/ekaci/services/webhook"
)

func commit(c byte) string { return strings.Repeat(string(c), 40) }

var (
	repo    = githubtest.Repo{Owner: "octo", Name: "repo", Installation: 11}
	other   = githubtest.Repo{Owner: "octo", Name: "other", Installation: 11}
	pr7     = githubtest.PR{Number: 7, Head: commit('a'), Base: commit('b')}
	draft8  = githubtest.PR{Number: 8, Head: commit('c'), Base: commit('b'), Draft: true}
	zero    = strings.Repeat("0", 40)
	cloneOf = func(r githubtest.Repo) string { return "https://github.com/" + r.Owner + "/" + r.Name + ".git" }
)

// harness is a webhook served on loopback against a real JetStream event
// log and deliveries table, and a fake GitHub API.
type harness struct {
	t      *testing.T
	ctx    context.Context
	log    *eventlog.Log
	gh     *githubtest.Server
	url    string
	secret []byte
}

func newHarness(t *testing.T, policy webhook.Policy) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	d, err := webhook.OpenDeliveries(ctx, js, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	pulls, err := webhook.OpenPulls(ctx, js, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	gh := githubtest.New(t)
	gh.Install(11, "octo/repo", "octo/other")
	app, err := githubapp.New(githubapp.Config{AppID: gh.AppID, PrivateKey: gh.PrivateKeyPEM(), BaseURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.NewHandler(webhook.Config{Events: log, Logger: zerolog.Nop(), Secret: []byte(secret), Deliveries: d, Pulls: pulls, Policy: policy, App: app})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{t: t, ctx: ctx, log: log, gh: gh, url: srv.URL, secret: []byte(secret)}
}

func (h *harness) deliver(event, delivery string, body []byte) (int, string) {
	h.t.Helper()
	code, msg, err := githubtest.Deliver(h.ctx, h.url, h.secret, event, delivery, body, "")
	if err != nil {
		h.t.Fatal(err)
	}
	return code, msg
}

// requests are the change requests recorded, in order.
func (h *harness) requests() []*eventsv1.ChangeRequested {
	h.t.Helper()
	var out []*eventsv1.ChangeRequested
	err := h.log.Read(h.ctx, 0, []string{eventlog.FactFilter(eventlog.Change, "requested")}, func(r eventlog.Record) error {
		out = append(out, r.Event.GetChangeRequested())
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

type delivery struct {
	event string
	body  []byte
	want  int
}

func TestDeliveries(t *testing.T) {
	for _, tt := range []struct {
		name       string
		policy     webhook.Policy
		deliveries []delivery
		// want are the change requests recorded, as "head base event#pr".
		want []string
	}{
		{"pull request actions that test", webhook.Policy{}, []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "synchronize", githubtest.PR{Number: 7, Head: commit('d'), Base: commit('b'), Before: commit('a')}), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "ready_for_review", githubtest.PR{Number: 9, Head: commit('e'), Base: commit('b')}), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "reopened", githubtest.PR{Number: 10, Head: commit('f'), Base: commit('b')}), http.StatusAccepted},
		}, []string{"a b pull_request#7", "d b pull_request#7", "e b pull_request#9", "f b pull_request#10"}},
		{"pull request actions that do not", webhook.Policy{}, []delivery{
			{"pull_request", githubtest.PullRequest(repo, "labeled", pr7), http.StatusNoContent},
			{"pull_request", githubtest.PullRequest(repo, "edited", pr7), http.StatusNoContent},
			{"pull_request", githubtest.PullRequest(repo, "some_future_action", pr7), http.StatusNoContent},
		}, nil},
		{"drafts are tested by default", webhook.Policy{}, []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", draft8), http.StatusAccepted},
		}, []string{"c b pull_request#8"}},
		{"drafts skipped when configured", webhook.Policy{SkipDrafts: true}, []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", draft8), http.StatusNoContent},
		}, nil},
		{"push", webhook.Policy{}, []delivery{
			{"push", githubtest.Push(repo, "refs/heads/main", commit('1'), commit('2'), false), http.StatusAccepted},
			{"push", githubtest.Push(repo, "refs/heads/feature", commit('2'), commit('3'), false), http.StatusNoContent},
			{"push", githubtest.Push(repo, "refs/heads/main", commit('2'), zero, true), http.StatusNoContent},
			{"push", githubtest.Push(repo, "refs/tags/v1", zero, commit('4'), false), http.StatusNoContent},
		}, []string{"2  push#0"}},
		{"merge group", webhook.Policy{}, []delivery{
			{"merge_group", githubtest.MergeGroup(repo, commit('5'), commit('b'), pr7), http.StatusAccepted},
		}, []string{"5 b merge_group#0"}},
		{"events and deliveries ekaci does not act on", webhook.Policy{}, []delivery{
			{"ping", githubtest.Ping(), http.StatusOK},
			{"star", []byte(`{"action":"created","starred_at":"yesterday"}`), http.StatusNoContent},
			{"issues", []byte(`not even json`), http.StatusNoContent},
			{"check_suite", githubtest.CheckSuiteEvent(repo, "completed", commit('a'), pr7), http.StatusNoContent},
		}, nil},
		{"installation removed", webhook.Policy{}, []delivery{
			{"installation", githubtest.Installation(11, "octo", "created", false, "octo/repo", "octo/other"), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"installation", githubtest.Installation(11, "octo", "deleted", false), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "synchronize", githubtest.PR{Number: 7, Head: commit('d'), Base: commit('b')}), http.StatusForbidden},
		}, []string{"a b pull_request#7"}},
		{"repository removed from the installation", webhook.Policy{}, []delivery{
			{"installation", githubtest.Installation(11, "octo", "created", false, "octo/repo", "octo/other"), http.StatusAccepted},
			{"installation_repositories", githubtest.InstallationRepositories(11, "octo", "removed", nil, []string{"octo/other"}), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(other, "opened", pr7), http.StatusForbidden},
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"installation_repositories", githubtest.InstallationRepositories(11, "octo", "added", []string{"octo/other"}, nil), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(other, "opened", githubtest.PR{Number: 1, Head: commit('9'), Base: commit('8')}), http.StatusAccepted},
		}, []string{"a b pull_request#7", "9 8 pull_request#1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.policy)
			for i, d := range tt.deliveries {
				if code, msg := h.deliver(d.event, fmt.Sprintf("delivery-%d", i), d.body); code != d.want {
					t.Fatalf("delivery %d (%s): %d %q, want %d", i, d.event, code, msg, d.want)
				}
			}
			var got []string
			for _, r := range h.requests() {
				o := r.GetGithub()
				got = append(got, fmt.Sprintf("%s %s %s#%d", r.GetHeadCommit()[:1], first(r.GetBaseCommit()), o.GetEvent(), o.GetPullRequest()))
				if o.GetInstallationId() != 11 || o.GetOwner() != "octo" || r.GetRepoUrl() != cloneOf(githubtest.Repo{Owner: o.GetOwner(), Name: o.GetRepo()}) {
					t.Errorf("request %+v: want installation 11, owner octo and its clone url", r)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("change requests = %q, want %q", got, tt.want)
			}
		})
	}
}

func first(s string) string {
	if s == "" {
		return ""
	}
	return s[:1]
}

// TestRedeliveryIsANoOp: the same X-GitHub-Delivery, after the stream's
// duplicate window and after its change concluded, records nothing more
// and answers as the first time.
func TestRedeliveryIsANoOp(t *testing.T) {
	h := newHarness(t, webhook.Policy{})
	body := githubtest.Push(repo, "refs/heads/main", commit('1'), commit('2'), false)
	if code, _ := h.deliver("push", "guid-1", body); code != http.StatusAccepted {
		t.Fatalf("first delivery: %d", code)
	}
	// A new request for a change whose checkout failed would start a new
	// attempt: the redelivery must not, since it is the same delivery.
	id := eventlog.ChangeID(cloneOf(repo), commit('2'), "")
	for _, ev := range []*eventsv1.Event{
		{Id: eventlog.CheckoutFailedID(id), Payload: &eventsv1.Event_ChangeCheckoutFailed{ChangeCheckoutFailed: &eventsv1.ChangeCheckoutFailed{Error: "down"}}},
		{Id: eventlog.ConcludedID(id), Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{Conclusion: eventsv1.Conclusion_CONCLUSION_FAILURE}}},
	} {
		if _, err := h.log.Append(h.ctx, id, ev); err != nil {
			t.Fatal(err)
		}
	}
	code, msg := h.deliver("push", "guid-1", body)
	if code != http.StatusAccepted || !strings.Contains(msg, "already handled") {
		t.Fatalf("redelivery: %d %q, want 202 already handled", code, msg)
	}
	if n := len(h.requests()); n != 1 {
		t.Fatalf("%d change requests after the redelivery, want 1", n)
	}
	// A new delivery of the same push is a new request: a new attempt.
	if code, _ := h.deliver("push", "guid-2", body); code != http.StatusAccepted {
		t.Fatalf("new delivery: %d", code)
	}
	if n := len(h.requests()); n != 2 {
		t.Fatalf("%d change requests after a new delivery, want 2", n)
	}
}

func TestApproval(t *testing.T) {
	h := newHarness(t, webhook.Policy{RequireApproval: true, Approved: []string{"Friend"}})
	h.gh.SetPermission("octo/repo", "maintainer", "maintain")
	h.gh.SetPermission("octo/repo", "reader", "read")
	h.gh.SetPermission("octo/repo", "member", "write")
	stranger := githubtest.PR{Number: 3, Head: commit('a'), Base: commit('b'), Author: "stranger", AuthorAssociation: "FIRST_TIME_CONTRIBUTOR"}
	steps := []struct {
		name  string
		event string
		body  []byte
		want  int
	}{
		{"stranger opens", "pull_request", githubtest.PullRequest(repo, "opened", stranger), http.StatusAccepted},
		{"a reader clicks approve", "check_run", githubtest.CheckRunEvent(repo, "requested_action", 1, checkname.Approval, commit('a'), stranger, checkname.ApproveAction, "reader"), http.StatusForbidden},
		{"a maintainer clicks approve", "check_run", githubtest.CheckRunEvent(repo, "requested_action", 1, checkname.Approval, commit('a'), stranger, checkname.ApproveAction, "maintainer"), http.StatusAccepted},
		{"a member opens", "pull_request", githubtest.PullRequest(repo, "opened", githubtest.PR{Number: 4, Head: commit('c'), Base: commit('b'), Author: "member"}), http.StatusAccepted},
		{"an approved login opens", "pull_request", githubtest.PullRequest(repo, "opened", githubtest.PR{Number: 5, Head: commit('d'), Base: commit('b'), Author: "friend"}), http.StatusAccepted},
	}
	wantRequests := []int{0, 0, 1, 2, 3}
	for i, s := range steps {
		if code, msg := h.deliver(s.event, fmt.Sprintf("d%d", i), s.body); code != s.want {
			t.Fatalf("%s: %d %q, want %d", s.name, code, msg, s.want)
		}
		if n := len(h.requests()); n != wantRequests[i] {
			t.Fatalf("after %s: %d change requests, want %d", s.name, n, wantRequests[i])
		}
		if i == 0 {
			runs := h.gh.CheckRuns()
			if len(runs) != 1 || runs[0].Name != checkname.Approval || runs[0].HeadSHA != commit('a') ||
				runs[0].Conclusion != "action_required" || len(runs[0].Actions) != 1 || runs[0].Actions[0].Identifier != checkname.ApproveAction {
				t.Fatalf("check runs after the stranger's PR: %+v, want one approval run with the approve action", runs)
			}
		}
	}
	r := h.requests()[0]
	if r.GetHeadCommit() != commit('a') || r.GetBaseCommit() != commit('b') || r.GetGithub().GetPullRequest() != 3 {
		t.Fatalf("approved request %+v, want the stranger's PR #3 a..b", r)
	}
	if runs := h.gh.CheckRuns(); runs[0].Conclusion != "success" || !strings.Contains(runs[0].Title, "maintainer") {
		t.Fatalf("approval run after the click: %+v, want success naming the maintainer", runs[0])
	}
}

// cancelled lists the heads of the changes cancelled, with why.
func (h *harness) cancelled() map[string]string {
	h.t.Helper()
	heads := map[string]string{}
	err := h.log.Read(h.ctx, 0, []string{eventlog.FactFilter(eventlog.Change, "requested")}, func(r eventlog.Record) error {
		heads[r.ID] = r.Event.GetChangeRequested().GetHeadCommit()
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]string{}
	err = h.log.Read(h.ctx, 0, []string{eventlog.FactFilter(eventlog.Change, "cancelled")}, func(r eventlog.Record) error {
		out[heads[r.ID][:1]] = r.Event.GetChangeCancelled().GetActor().GetReason()
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func TestSupersedeAndClose(t *testing.T) {
	sync := func(before, head byte) []byte {
		return githubtest.PullRequest(repo, "synchronize", githubtest.PR{Number: 7, Head: commit(head), Base: commit('b'), Before: commit(before)})
	}
	for _, tt := range []struct {
		name       string
		deliveries []delivery
		requested  []string          // heads requested, in order
		cancelled  map[string]string // head -> reason
	}{
		{"a newer push supersedes the older head", []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"pull_request", sync('a', 'c'), http.StatusAccepted},
		}, []string{"a", "c"}, map[string]string{"a": "superseded by " + commit('c')}},
		{"out of order: the late older head neither runs nor cancels the newer", []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"pull_request", sync('c', 'd'), http.StatusAccepted},
			{"pull_request", sync('a', 'c'), http.StatusAccepted},
		}, []string{"a", "d"}, map[string]string{"a": "superseded by " + commit('d')}},
		{"closed cancels what runs", []delivery{
			{"pull_request", githubtest.PullRequest(repo, "opened", pr7), http.StatusAccepted},
			{"pull_request", githubtest.PullRequest(repo, "closed", pr7), http.StatusAccepted},
		}, []string{"a"}, map[string]string{"a": "pull request #7 closed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, webhook.Policy{})
			for i, d := range tt.deliveries {
				if code, msg := h.deliver(d.event, fmt.Sprintf("d-%d", i), d.body); code != d.want {
					t.Fatalf("delivery %d: %d %q, want %d", i, code, msg, d.want)
				}
			}
			var heads []string
			for _, r := range h.requests() {
				heads = append(heads, r.GetHeadCommit()[:1])
			}
			if fmt.Sprint(heads) != fmt.Sprint(tt.requested) {
				t.Fatalf("requested heads %v, want %v", heads, tt.requested)
			}
			if got := h.cancelled(); fmt.Sprint(got) != fmt.Sprint(tt.cancelled) {
				t.Fatalf("cancelled %v, want %v", got, tt.cancelled)
			}
		})
	}
}

// TestApprovalByFact: an operator's approval (contributor_approved, as
// the admin API records it) lets a login's pull requests run; its revoke
// makes the next one wait again; a revoke does not remove a login the
// server's --github-approved lists.
func TestApprovalByFact(t *testing.T) {
	h := newHarness(t, webhook.Policy{RequireApproval: true, Approved: []string{"friend"}})
	op := &eventsv1.Actor{Who: "unix:carol", Source: action.SourceAdmin, Reason: "known contributor"}
	pr := func(n int, author string, head byte) []byte {
		return githubtest.PullRequest(repo, "opened", githubtest.PR{Number: n, Head: commit(head), Base: commit('b'), Author: author})
	}
	steps := []struct {
		name        string
		act         func() error
		body        []byte
		wantRequest bool
	}{
		{"not approved", nil, pr(1, "newcomer", 'a'), false},
		{"approved by an operator", func() error { _, err := action.Approve(h.ctx, h.log, "NewComer", op); return err }, pr(2, "newcomer", 'c'), true},
		{"revoked", func() error { _, err := action.Revoke(h.ctx, h.log, "newcomer", op); return err }, pr(3, "newcomer", 'd'), false},
		{"approved again", func() error { _, err := action.Approve(h.ctx, h.log, "newcomer", op); return err }, pr(4, "newcomer", 'e'), true},
		{"listed, approved and revoked by facts", func() error {
			if _, err := action.Approve(h.ctx, h.log, "friend", op); err != nil {
				return err
			}
			_, err := action.Revoke(h.ctx, h.log, "friend", op)
			return err
		}, pr(5, "friend", 'f'), true},
	}
	requests := 0
	for i, s := range steps {
		if s.act != nil {
			if err := s.act(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		if code, msg := h.deliver("pull_request", fmt.Sprintf("f%d", i), s.body); code != http.StatusAccepted {
			t.Fatalf("%s: %d %q", s.name, code, msg)
		}
		if s.wantRequest {
			requests++
		}
		if n := len(h.requests()); n != requests {
			t.Fatalf("after %s: %d change requests, want %d", s.name, n, requests)
		}
	}
}
