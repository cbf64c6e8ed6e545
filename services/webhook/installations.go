package webhook

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// access is what ekaci was told an installation may see.
type access struct {
	known    bool // a fact was recorded for it
	removed  bool
	all      bool
	repos    map[string]bool // lower-case owner/repo -> may see
	excluded map[string]bool // removed from an "all" installation
}

// installationAccess folds the installation's facts.
func installationAccess(ctx context.Context, log *eventlog.Log, installation int64) (access, error) {
	recs, _, err := log.Load(ctx, eventlog.GitHub, strconv.FormatInt(installation, 10))
	if err != nil {
		return access{}, fmt.Errorf("read installation %d: %w", installation, err)
	}
	a := access{repos: map[string]bool{}, excluded: map[string]bool{}}
	for _, r := range recs {
		c := r.Event.GetGithubInstallationChanged()
		if c == nil {
			continue
		}
		a.known = true
		a.removed = c.GetRemoved()
		if c.GetAction() == "created" || c.GetAction() == "deleted" {
			a.repos, a.excluded = map[string]bool{}, map[string]bool{}
		}
		a.all = c.GetAllRepositories()
		for _, n := range c.GetAdded() {
			a.repos[strings.ToLower(n)], a.excluded[strings.ToLower(n)] = true, false
		}
		for _, n := range c.GetRemovedRepositories() {
			a.repos[strings.ToLower(n)], a.excluded[strings.ToLower(n)] = false, true
		}
	}
	return a, nil
}

// allows says whether the installation may see repo. An installation
// ekaci was never told about (the App was installed before ekaci ran) is
// allowed: GitHub delivered for it, and its token only reaches what it
// may see.
func (a access) allows(repo string) bool {
	repo = strings.ToLower(repo)
	switch {
	case !a.known:
		return true
	case a.removed:
		return false
	case a.all:
		return !a.excluded[repo]
	}
	return a.repos[repo]
}

// installationFact is the fact an installation delivery records.
func installationFact(event, action string, id int64, account, selection string, added, removed []string) *eventsv1.GitHubInstallationChanged {
	c := &eventsv1.GitHubInstallationChanged{InstallationId: id, Account: account, Action: action,
		AllRepositories: selection == "all", Added: added, RemovedRepositories: removed}
	if event == "installation" {
		switch action {
		case "deleted", "suspend":
			c.Removed = true
		}
	}
	return c
}
