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
	default:
		return ignored("pull_request", p.GetAction()), nil
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
	case got.Joined:
		log.Info().Str("change", got.ChangeID).Msg("change already known")
		return done(http.StatusAccepted, "change %s already requested", got.ChangeID), nil
	}
	log.Info().Str("change", got.ChangeID).Int("attempt", got.Attempt).Str("repo", req.GetRepoName()).Str("head", head).
		Str("base", base).Msg("change requested")
	return done(http.StatusAccepted, "change %s requested", got.ChangeID), nil
}

// rerequest is a person's "Re-run" of a check run or suite.
func (h *Handler) rerequest(_ context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, action, head string) (Outcome, error) {
	if action != "rerequested" {
		return ignored(o.GetEvent(), action), nil
	}
	log.Warn().Str("head", head).Msg("re-run asked for, but retrying a head's failures is not built yet")
	return done(http.StatusNoContent, "%s rerequested: retrying failures is not supported yet", o.GetEvent()), nil
}
