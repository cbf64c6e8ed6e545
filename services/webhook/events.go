package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/go-github/v60/github"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/gitter/request"
)

func done(status int, format string, args ...any) Outcome {
	return Outcome{Status: status, Message: fmt.Sprintf(format, args...)}
}

// ignored is the answer to an action ekaci does not act on.
func ignored(event, action string) Outcome {
	return done(http.StatusNoContent, "%s %s: nothing to do", event, action)
}

// handle acts on one parsed delivery. An error is transient (the log or
// GitHub could not be reached): the delivery is answered 503 and not
// recorded, so GitHub's redelivery does it.
func (h *Handler) handle(ctx context.Context, log zerolog.Logger, event, delivery string, payload any) (Outcome, error) {
	switch p := payload.(type) {
	case *github.InstallationEvent:
		return h.installation(ctx, log, delivery, installationFact("installation", p.GetAction(), p.GetInstallation().GetID(),
			p.GetInstallation().GetAccount().GetLogin(), p.GetInstallation().GetRepositorySelection(), repoNames(p.Repositories), nil))
	case *github.InstallationRepositoriesEvent:
		return h.installation(ctx, log, delivery, installationFact("installation_repositories", p.GetAction(), p.GetInstallation().GetID(),
			p.GetInstallation().GetAccount().GetLogin(), p.GetRepositorySelection(), repoNames(p.RepositoriesAdded), repoNames(p.RepositoriesRemoved)))
	}
	o, ok := origin(event, delivery, payload)
	if !ok {
		return done(http.StatusNoContent, "%s: not about a repository", event), nil
	}
	if o.GetInstallationId() != 0 {
		a, err := installationAccess(ctx, h.log, o.GetInstallationId())
		if err != nil {
			return Outcome{}, err
		}
		if repo := o.GetOwner() + "/" + o.GetRepo(); !a.allows(repo) {
			log.Warn().Int64("installation", o.GetInstallationId()).Str("repo", repo).Msg("refused a delivery for a repository the installation may not see")
			return done(http.StatusForbidden, "installation %d may not see %s", o.GetInstallationId(), repo), nil
		}
	}
	switch p := payload.(type) {
	case *github.PullRequestEvent:
		return h.pullRequest(ctx, log, o, p)
	case *github.PushEvent:
		return h.push(ctx, log, o, p)
	case *github.MergeGroupEvent:
		if p.GetAction() != "checks_requested" {
			return ignored(event, p.GetAction()), nil
		}
		g := p.GetMergeGroup()
		o.HeadRef = g.GetHeadRef()
		return h.request(ctx, log, o, p.GetRepo(), g.GetHeadSHA(), g.GetBaseSHA())
	case *github.CheckRunEvent:
		if p.GetAction() == "requested_action" {
			return h.approve(ctx, log, o, p)
		}
		return h.rerequest(ctx, log, o, p.GetAction(), p.GetCheckRun().GetHeadSHA())
	case *github.CheckSuiteEvent:
		return h.rerequest(ctx, log, o, p.GetAction(), p.GetCheckSuite().GetHeadSHA())
	}
	return ignored(event, ""), nil
}

func repoNames(repos []*github.Repository) []string {
	var out []string
	for _, r := range repos {
		if n := r.GetFullName(); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// origin reads where a repository delivery came from.
func origin(event, delivery string, payload any) (*eventsv1.GitHubOrigin, bool) {
	var repo *github.Repository
	var inst *github.Installation
	var sender *github.User
	var action string
	switch p := payload.(type) {
	case *github.PullRequestEvent:
		repo, inst, sender, action = p.GetRepo(), p.GetInstallation(), p.GetSender(), p.GetAction()
	case *github.MergeGroupEvent:
		repo, inst, sender, action = p.GetRepo(), p.GetInstallation(), p.GetSender(), p.GetAction()
	case *github.CheckRunEvent:
		repo, inst, sender, action = p.GetRepo(), p.GetInstallation(), p.GetSender(), p.GetAction()
	case *github.CheckSuiteEvent:
		repo, inst, sender, action = p.GetRepo(), p.GetInstallation(), p.GetSender(), p.GetAction()
	case *github.PushEvent:
		// A push's repository is a PushEventRepository.
		r := p.GetRepo()
		o := &eventsv1.GitHubOrigin{InstallationId: p.GetInstallation().GetID(), Owner: ownerOf(r.GetFullName(), r.GetOwner().GetLogin()),
			Repo: r.GetName(), Event: event, Sender: p.GetSender().GetLogin(), Delivery: delivery, HeadRef: p.GetRef()}
		return o, r.GetFullName() != ""
	}
	if repo == nil || repo.GetFullName() == "" {
		return nil, false
	}
	return &eventsv1.GitHubOrigin{InstallationId: inst.GetID(), Owner: ownerOf(repo.GetFullName(), repo.GetOwner().GetLogin()),
		Repo: repo.GetName(), Event: event, Action: action, Sender: sender.GetLogin(), Delivery: delivery}, true
}

// ownerOf is the owner login, from the full name when the payload's owner
// object was left out.
func ownerOf(fullName, login string) string {
	if login != "" {
		return login
	}
	owner, _, _ := strings.Cut(fullName, "/")
	return owner
}

func (h *Handler) installation(ctx context.Context, log zerolog.Logger, delivery string, c *eventsv1.GitHubInstallationChanged) (Outcome, error) {
	if c.GetInstallationId() == 0 {
		return done(http.StatusBadRequest, "installation payload without installation.id"), nil
	}
	ev := &eventsv1.Event{Id: eventlog.InstallationChangedID(delivery),
		Payload: &eventsv1.Event_GithubInstallationChanged{GithubInstallationChanged: c}}
	if _, err := h.log.Append(ctx, strconv.FormatInt(c.GetInstallationId(), 10), ev); err != nil {
		return Outcome{}, fmt.Errorf("record installation %d: %w", c.GetInstallationId(), err)
	}
	log.Info().Int64("installation", c.GetInstallationId()).Str("action", c.GetAction()).Bool("removed", c.GetRemoved()).
		Strs("added", c.GetAdded()).Strs("removed_repositories", c.GetRemovedRepositories()).Msg("installation recorded")
	return done(http.StatusAccepted, "installation %d %s recorded", c.GetInstallationId(), c.GetAction()), nil
}

func (h *Handler) pullRequest(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, p *github.PullRequestEvent) (Outcome, error) {
	pr := p.GetPullRequest()
	o.PullRequest = int64(pr.GetNumber())
	if o.PullRequest == 0 {
		o.PullRequest = int64(p.GetNumber())
	}
	o.HeadRef = pr.GetHead().GetRef()
	switch p.GetAction() {
	case "opened", "reopened", "synchronize", "ready_for_review":
	case "closed":
		return h.closed(ctx, log, o)
	default:
		return ignored("pull_request", p.GetAction()), nil
	}
	head := pr.GetHead().GetSHA()
	if h.pulls != nil && head != "" {
		before := ""
		if p.GetAction() == "synchronize" {
			before = p.GetBefore()
		}
		e, err := h.pulls.addHead(ctx, o.GetOwner()+"/"+o.GetRepo(), o.GetPullRequest(), pullHead{Head: head, Before: before})
		if err != nil {
			return Outcome{}, err
		}
		if tip := e.tip(); tip != head {
			// A late delivery: a newer head is already there. It is not
			// tested, and it cancels nothing.
			log.Info().Str("head", head).Str("newer", tip).Msg("head already superseded: not tested")
			return done(http.StatusAccepted, "head %s of pull request #%d is already superseded by %s", head, o.GetPullRequest(), tip), nil
		}
	}
	if pr.GetDraft() && h.policy.SkipDrafts {
		return done(http.StatusNoContent, "pull request #%d is a draft: not tested (--github-skip-drafts)", o.PullRequest), nil
	}
	if h.policy.RequireApproval {
		ok, err := h.authorApproved(ctx, o, pr.GetUser().GetLogin())
		if err != nil {
			return Outcome{}, err
		}
		if !ok {
			return h.askApproval(ctx, log, o, pr)
		}
	}
	return h.request(ctx, log, o, p.GetRepo(), pr.GetHead().GetSHA(), pr.GetBase().GetSHA())
}

// zeroCommit is what GitHub sends as the "after" of a deleted branch.
func zeroCommit(sha string) bool { return strings.Trim(sha, "0") == "" }

func (h *Handler) push(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, p *github.PushEvent) (Outcome, error) {
	def := p.GetRepo().GetDefaultBranch()
	switch {
	case p.GetDeleted() || zeroCommit(p.GetAfter()):
		return done(http.StatusNoContent, "push deleted %s: nothing to test", p.GetRef()), nil
	case def == "" || p.GetRef() != "refs/heads/"+def:
		return done(http.StatusNoContent, "push to %s, not the default branch %s: not tested", p.GetRef(), def), nil
	}
	r := p.GetRepo()
	repo := &github.Repository{FullName: r.FullName, CloneURL: r.CloneURL}
	return h.request(ctx, log, o, repo, p.GetAfter(), "")
}

// request records the change (repository, head, base) with its origin.
func (h *Handler) request(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, repo *github.Repository, head, base string) (Outcome, error) {
	req := &eventsv1.ChangeRequested{RepoUrl: repo.GetCloneURL(), RepoName: repo.GetFullName(), HeadCommit: head,
		BaseCommit: base, Source: "webhook", Github: o}
	eventID := eventlog.WebhookRequestedID(o.GetDelivery(), eventlog.ChangeID(req.GetRepoUrl(), head, base))
	got, err := request.Record(ctx, h.log, req, eventID, "webhook "+o.GetEvent()+" payload")
	switch {
	case errors.Is(err, request.ErrBadRequest):
		log.Warn().Err(err).Msg("refused a change request")
		return done(http.StatusBadRequest, "%v", err), nil
	case err != nil:
		return Outcome{}, fmt.Errorf("record the change: %w", err)
	}
	if err := h.index(ctx, log, o, head, got.ChangeID); err != nil {
		return Outcome{}, err
	}
	if got.Joined {
		log.Info().Str("change", got.ChangeID).Msg("change already known")
		return done(http.StatusAccepted, "change %s already requested", got.ChangeID), nil
	}
	log.Info().Str("change", got.ChangeID).Int("attempt", got.Attempt).Str("repo", req.GetRepoName()).Str("head", head).
		Str("base", base).Msg("change requested")
	return done(http.StatusAccepted, "change %s requested", got.ChangeID), nil
}

// index records the change of a head (for re-runs) and, for a pull
// request, supersedes its older heads: their changes are cancelled.
func (h *Handler) index(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, head, changeID string) error {
	if h.pulls == nil {
		return nil
	}
	repo := o.GetOwner() + "/" + o.GetRepo()
	if err := h.pulls.addChange(ctx, repo, head, changeID); err != nil {
		return err
	}
	if o.GetPullRequest() == 0 || o.GetEvent() != "pull_request" {
		return nil
	}
	e, err := h.pulls.addHead(ctx, repo, o.GetPullRequest(), pullHead{Head: head, Change: changeID})
	if err != nil {
		return err
	}
	if e.tip() != head {
		return nil
	}
	for _, x := range e.Heads {
		if x.Head == head || x.Change == "" || x.Change == changeID {
			continue
		}
		reason := "superseded by " + head
		if err := h.cancel(ctx, log, x.Change, o.GetSender(), reason); err != nil {
			return err
		}
	}
	return nil
}

// cancel cancels a change on GitHub's behalf; one already concluded is
// left as it is.
func (h *Handler) cancel(ctx context.Context, log zerolog.Logger, changeID, who, reason string) error {
	if who == "" {
		who = "github"
	}
	_, err := action.CancelChange(ctx, h.log, changeID, &eventsv1.Actor{Who: who, Source: action.SourceGitHub, Reason: reason})
	switch {
	case errors.Is(err, action.ErrState), errors.Is(err, action.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	log.Info().Str("change", changeID).Str("reason", reason).Msg("change cancelled")
	return nil
}

// closed cancels what a closed pull request's heads still run.
func (h *Handler) closed(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin) (Outcome, error) {
	if h.pulls == nil {
		return ignored("pull_request", "closed"), nil
	}
	e, err := h.pulls.heads(ctx, o.GetOwner()+"/"+o.GetRepo(), o.GetPullRequest())
	if err != nil {
		return Outcome{}, err
	}
	n := 0
	for _, x := range e.Heads {
		if x.Change == "" {
			continue
		}
		if err := h.cancel(ctx, log, x.Change, o.GetSender(), fmt.Sprintf("pull request #%d closed", o.GetPullRequest())); err != nil {
			return Outcome{}, err
		}
		n++
	}
	return done(http.StatusAccepted, "pull request #%d closed: %d changes looked at", o.GetPullRequest(), n), nil
}

// rerequest is a person's "Re-run" of a check run or suite: every
// concluded jobset of the head's changes is restarted, which builds their
// failed and interrupted derivations again (a permanent failure is
// retried only this way, or by an admin).
func (h *Handler) rerequest(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, action, head string) (Outcome, error) {
	if action != "rerequested" {
		return ignored(o.GetEvent(), action), nil
	}
	if h.pulls == nil || head == "" {
		return ignored(o.GetEvent(), action), nil
	}
	changes, err := h.pulls.changes(ctx, o.GetOwner()+"/"+o.GetRepo(), head)
	if err != nil {
		return Outcome{}, err
	}
	restarted := 0
	for _, c := range changes {
		n, err := h.restart(ctx, c, o.GetSender())
		if err != nil {
			return Outcome{}, err
		}
		restarted += n
	}
	log.Info().Str("head", head).Int("changes", len(changes)).Int("restarted", restarted).Msg("re-run")
	if restarted == 0 {
		return done(http.StatusNoContent, "nothing of %s to run again", head), nil
	}
	return done(http.StatusAccepted, "%d jobs of %s run again", restarted, head), nil
}

// restart restarts each concluded jobset of a change.
func (h *Handler) restart(ctx context.Context, changeID, who string) (int, error) {
	recs, _, err := h.log.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return 0, fmt.Errorf("read change %s: %w", changeID, err)
	}
	n := 0
	for _, r := range recs {
		for _, job := range r.Event.GetChangeConfigRead().GetJobs() {
			_, err := action.Restart(ctx, h.log, eventlog.JobsetID(changeID, job),
				&eventsv1.Actor{Who: who, Source: action.SourceGitHub, Reason: "re-run on GitHub"})
			switch {
			case errors.Is(err, action.ErrState), errors.Is(err, action.ErrNotFound):
			case err != nil:
				return n, err
			default:
				n++
			}
		}
	}
	return n, nil
}
