package webhook

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/flagenv"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

// Policy says which pull requests ekaci tests. It is the server's
// configuration, never read from a pull request.
type Policy struct {
	// SkipDrafts leaves draft pull requests untested until they are
	// ready for review (default: drafts are tested).
	SkipDrafts bool
	// RequireApproval holds a pull request whose author has no write
	// access to the repository and is not in Approved: it gets one
	// "approval required" check run with an "Approve and run" button, and
	// nothing is evaluated or built until a person with write access
	// clicks it.
	RequireApproval bool
	// Approved are GitHub logins whose pull requests run without approval.
	// Operators approve and revoke more through the admin API
	// (contributor_approved, contributor_revoked); a revoke there does not
	// remove a login listed here.
	Approved []string
}

// apiRetry bounds GitHub calls made while GitHub waits for the answer
// (it gives up on a delivery after 10 s).
var apiRetry = githubapp.Retry{Attempts: 2, Backoff: 500 * time.Millisecond, MaxWait: 3 * time.Second}

// writes reports whether a repository permission lets its holder approve.
func writes(permission string) bool {
	return permission == "admin" || permission == "maintain" || permission == "write"
}

// permission asks GitHub for user's permission on the origin's repository.
func (h *Handler) permission(ctx context.Context, o *eventsv1.GitHubOrigin, user string) (string, error) {
	var perm string
	err := apiRetry.Do(ctx, "permission of "+user, func(ctx context.Context) (*github.Response, error) {
		p, resp, err := h.app.Client(o.GetInstallationId()).Repositories.GetPermissionLevel(ctx, o.GetOwner(), o.GetRepo(), user)
		perm = p.GetPermission()
		return resp, err
	})
	return perm, err
}

// authorApproved reports whether a pull request's author may run CI
// without a maintainer's approval: listed in Policy.Approved (the
// server's configuration, which no fact changes), approved by an operator
// (contributor_approved not revoked since: folded from the login's own
// facts in the log, so a revoke counts from the moment it is recorded),
// or holding write access to the repository.
func (h *Handler) authorApproved(ctx context.Context, o *eventsv1.GitHubOrigin, author string) (bool, error) {
	if author != "" && slices.ContainsFunc(h.policy.Approved, func(a string) bool { return strings.EqualFold(a, author) }) {
		return true, nil
	}
	if author != "" {
		c, _, err := action.LoadContributor(ctx, h.log, author)
		if err != nil {
			return false, err
		}
		if c.Approved {
			return true, nil
		}
	}
	perm, err := h.permission(ctx, o, author)
	if err != nil {
		return false, fmt.Errorf("approval of %s: %w", author, err)
	}
	return writes(perm), nil
}

// askApproval posts the "approval required" check run on the head.
func (h *Handler) askApproval(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, pr *github.PullRequest) (Outcome, error) {
	head := pr.GetHead().GetSHA()
	opt := github.CreateCheckRunOptions{Name: checkname.Approval, HeadSHA: head, Status: github.String("completed"),
		Conclusion: github.String("action_required"), ExternalID: github.String(fmt.Sprintf("approval/%d", o.GetPullRequest())),
		DetailsURL: nonEmpty(pr.GetHTMLURL()),
		Output: &github.CheckRunOutput{Title: github.String("Approval required"),
			Summary: github.String(fmt.Sprintf("@%s has no write access to %s/%s and is not on ekaci's approved list, so nothing of this pull request is evaluated or built until someone with write access approves it with **Approve and run** above.",
				pr.GetUser().GetLogin(), o.GetOwner(), o.GetRepo()))},
		Actions: []*github.CheckRunAction{{Label: "Approve and run", Description: "Evaluate and build this PR", Identifier: checkname.ApproveAction}}}
	err := apiRetry.Do(ctx, "approval check run", func(ctx context.Context) (*github.Response, error) {
		_, resp, err := h.app.Client(o.GetInstallationId()).Checks.CreateCheckRun(ctx, o.GetOwner(), o.GetRepo(), opt)
		return resp, err
	})
	if err != nil {
		return Outcome{}, err
	}
	log.Info().Int64("pull_request", o.GetPullRequest()).Str("author", pr.GetUser().GetLogin()).Str("head", head).Msg("approval required")
	return done(http.StatusAccepted, "pull request #%d waits for approval", o.GetPullRequest()), nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// approve handles a click on "Approve and run": the clicker must have
// write access; then the pull request's change is requested.
func (h *Handler) approve(ctx context.Context, log zerolog.Logger, o *eventsv1.GitHubOrigin, p *github.CheckRunEvent) (Outcome, error) {
	run := p.GetCheckRun()
	if p.GetRequestedAction().Identifier != checkname.ApproveAction || run.GetName() != checkname.Approval {
		return ignored("check_run", "requested_action"), nil
	}
	if h.app == nil {
		return done(http.StatusNoContent, "approval is not configured"), nil
	}
	sender := p.GetSender().GetLogin()
	perm, err := h.permission(ctx, o, sender)
	if err != nil {
		return Outcome{}, err
	}
	if !writes(perm) {
		log.Warn().Str("sender", sender).Str("permission", perm).Msg("refused an approval from someone without write access")
		return done(http.StatusForbidden, "@%s (%s) may not approve: write access is needed", sender, perm), nil
	}
	prs := run.PullRequests
	if len(prs) == 0 {
		prs = run.GetCheckSuite().PullRequests
	}
	if len(prs) == 0 {
		return done(http.StatusBadRequest, "approval of %s names no pull request", run.GetHeadSHA()), nil
	}
	pr := prs[0]
	o.PullRequest, o.HeadRef = int64(pr.GetNumber()), pr.GetHead().GetRef()
	o.Event, o.Action = "pull_request", "approved"
	out, err := h.request(ctx, log, o, p.GetRepo(), run.GetHeadSHA(), pr.GetBase().GetSHA())
	if err != nil || out.Status >= 400 {
		return out, err
	}
	upd := github.UpdateCheckRunOptions{Name: checkname.Approval, Status: github.String("completed"), Conclusion: github.String("success"),
		Output: &github.CheckRunOutput{Title: github.String("Approved by @" + sender),
			Summary: github.String(fmt.Sprintf("@%s approved running ekaci on this head; its checks follow.", sender))},
		Actions: []*github.CheckRunAction{}}
	if err := apiRetry.Do(ctx, "approve check run", func(ctx context.Context) (*github.Response, error) {
		_, resp, err := h.app.Client(o.GetInstallationId()).Checks.UpdateCheckRun(ctx, o.GetOwner(), o.GetRepo(), run.GetID(), upd)
		return resp, err
	}); err != nil {
		// The change is requested: the run goes on; the button stays.
		log.Warn().Err(err).Msg("could not mark the approval check run approved")
	}
	log.Info().Str("approved_by", sender).Int64("pull_request", o.GetPullRequest()).Msg("approved")
	return out, nil
}

// AddPolicyFlags defines the policy's flags on fs.
func AddPolicyFlags(fs *flag.FlagSet, p *Policy) {
	fs.BoolVar(&p.SkipDrafts, "github-skip-drafts", false, "do not test draft pull requests until they are ready for review")
	fs.BoolVar(&p.RequireApproval, "github-require-approval", false, "hold pull requests of authors without write access (and not --github-approved) until a maintainer clicks \"Approve and run\"")
	fs.Var((*flagenv.List)(&p.Approved), "github-approved", "comma-separated GitHub logins whose pull requests run without approval")
}
