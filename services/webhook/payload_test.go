package webhook

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-github/v60/github"

	"github.com/ekaci/ekaci/libs/githubtest"
)

var (
	tRepo = githubtest.Repo{Owner: "octo", Name: "repo", Installation: 11}
	tPR   = githubtest.PR{Number: 7, Head: strings.Repeat("a", 40), Base: strings.Repeat("b", 40), Before: strings.Repeat("c", 40)}
)

// mutate decodes a payload, applies f, and encodes it again.
func mutate(t testing.TB, body []byte, f func(m map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

// TestParseTolerates: fields ekaci does not read may have any shape. Each
// row is a payload go-github itself refuses (checked, so the row tests
// something), which Parse reads, with what ekaci needs intact.
func TestParseTolerates(t *testing.T) {
	pr := githubtest.PullRequest(tRepo, "synchronize", tPR)
	for _, tt := range []struct {
		name  string
		event string
		body  []byte
	}{
		{"timestamp not RFC 3339", "pull_request", mutate(t, pr, func(m map[string]any) {
			sub(m, "pull_request")["created_at"] = "2024-01-01 10:00:00 +0100"
		})},
		{"array where an object is documented", "pull_request", mutate(t, pr, func(m map[string]any) {
			sub(m, "pull_request")["milestone"] = []any{1, 2}
		})},
		{"string where an object is documented", "pull_request", mutate(t, pr, func(m map[string]any) {
			sub(m, "repository")["owner"] = "octo"
			sub(m, "repository")["license"] = "MIT"
		})},
		{"number as a string", "pull_request", mutate(t, pr, func(m map[string]any) {
			sub(m, "pull_request")["comments"] = "many"
		})},
		{"unix time in a nested installation", "installation", mutate(t, githubtest.Installation(11, "octo", "created", false, "octo/repo"), func(m map[string]any) {
			sub(m, "installation")["updated_at"] = "30/07/2017"
		})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := github.ParseWebHook(tt.event, tt.body); err == nil {
				t.Fatal("go-github parses this payload: the row tests nothing")
			}
			got, err := Parse(tt.event, tt.body)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			switch p := got.(type) {
			case *github.PullRequestEvent:
				if p.GetPullRequest().GetHead().GetSHA() != tPR.Head || p.GetRepo().GetFullName() != "octo/repo" || p.GetInstallation().GetID() != 11 {
					t.Fatalf("Parse lost what ekaci reads: %+v", p)
				}
				if o, ok := origin(tt.event, "d", p); !ok || o.GetOwner() != "octo" {
					t.Fatalf("origin = %+v, %v; want owner octo", o, ok)
				}
			case *github.InstallationEvent:
				if p.GetInstallation().GetID() != 11 || len(p.Repositories) != 1 {
					t.Fatalf("Parse lost what ekaci reads: %+v", p)
				}
			default:
				t.Fatalf("Parse = %T", got)
			}
		})
	}
}

// seeds are real-shaped deliveries of every event ekaci handles.
func seeds() map[string][][]byte {
	h, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	return map[string][][]byte{
		"pull_request": {githubtest.PullRequest(tRepo, "opened", tPR), githubtest.PullRequest(tRepo, "synchronize", tPR),
			githubtest.PullRequest(tRepo, "closed", tPR)},
		"push":                      {githubtest.Push(tRepo, "refs/heads/main", b, h, false), githubtest.Push(tRepo, "refs/heads/x", b, strings.Repeat("0", 40), true)},
		"check_run":                 {githubtest.CheckRunEvent(tRepo, "requested_action", 1, "ekaci: approval required", h, tPR, "approve", "m"), githubtest.CheckRunEvent(tRepo, "rerequested", 2, "ekaci: x", h, tPR, "", "m")},
		"check_suite":               {githubtest.CheckSuiteEvent(tRepo, "rerequested", h, tPR)},
		"merge_group":               {githubtest.MergeGroup(tRepo, h, b, tPR)},
		"installation":              {githubtest.Installation(11, "octo", "created", true), githubtest.Installation(11, "octo", "deleted", false, "octo/repo")},
		"installation_repositories": {githubtest.InstallationRepositories(11, "octo", "added", []string{"octo/a"}, []string{"octo/b"})},
		"ping":                      {githubtest.Ping()},
	}
}

var events = []string{"pull_request", "push", "check_run", "check_suite", "merge_group", "installation", "installation_repositories", "ping", "star"}

// FuzzParse: no payload makes the parsing of a delivery panic. `make fuzz`
// runs it for 5 minutes.
func FuzzParse(f *testing.F) {
	for event, bodies := range seeds() {
		for _, b := range bodies {
			for i, e := range events {
				if e == event {
					f.Add(uint8(i), b)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, ev uint8, body []byte) {
		event := events[int(ev)%len(events)]
		p, err := Parse(event, body)
		if err != nil {
			return
		}
		if _, handled := shapes[event]; p == nil && handled {
			t.Fatalf("Parse(%s) = nil, nil for a handled event", event)
		}
		if o, ok := origin(event, "d", p); ok && o.GetRepo() == "" && o.GetOwner() == "" {
			_ = o // an origin without a name is refused later by request.Check
		}
		_ = installationFactOf(p)
	})
}

// installationFactOf runs the installation decoding the handler does.
func installationFactOf(p any) any {
	switch p := p.(type) {
	case *github.InstallationEvent:
		return installationFact("installation", p.GetAction(), p.GetInstallation().GetID(), p.GetInstallation().GetAccount().GetLogin(),
			p.GetInstallation().GetRepositorySelection(), repoNames(p.Repositories), nil)
	case *github.InstallationRepositoriesEvent:
		return installationFact("installation_repositories", p.GetAction(), p.GetInstallation().GetID(), "", p.GetRepositorySelection(),
			repoNames(p.RepositoriesAdded), repoNames(p.RepositoriesRemoved))
	}
	return nil
}
