package githubtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Webhook payloads shaped as GitHub sends them (docs.github.com, "Webhook
// events and payloads"): real field names and nesting, with what real
// deliveries carry besides, including the irregular parts a tolerant
// reader must survive — timestamps as Unix seconds in a push's repository,
// a timestamp that is not RFC 3339 in a nested object, and nulls where
// objects are documented.

// Repo describes the repository of a payload.
type Repo struct {
	Owner, Name   string
	CloneURL      string // default https://github.com/<owner>/<name>.git
	DefaultBranch string // default main
	Installation  int64
}

func (r Repo) full() string { return r.Owner + "/" + r.Name }

func (r Repo) cloneURL() string {
	if r.CloneURL != "" {
		return r.CloneURL
	}
	return "https://github.com/" + r.full() + ".git"
}

func (r Repo) branch() string {
	if r.DefaultBranch != "" {
		return r.DefaultBranch
	}
	return "main"
}

func user(login string, id int) map[string]any {
	return map[string]any{"login": login, "id": id, "node_id": "MDQ6VXNlcjE=", "avatar_url": "https://github.com/images/error/" + login + "_happy.gif",
		"gravatar_id": "", "url": "https://api.github.com/users/" + login, "html_url": "https://github.com/" + login,
		"type": "User", "site_admin": false}
}

func (r Repo) repository(pushShape bool) map[string]any {
	m := map[string]any{"id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": r.Name, "full_name": r.full(),
		"owner": user(r.Owner, 1), "private": false, "html_url": "https://github.com/" + r.full(), "description": nil,
		"fork": false, "url": "https://api.github.com/repos/" + r.full(), "clone_url": r.cloneURL(),
		"git_url": "git://github.com/" + r.full() + ".git", "ssh_url": "git@github.com:" + r.full() + ".git",
		"default_branch": r.branch(), "created_at": "2011-01-26T19:01:12Z", "updated_at": "2011-01-26T19:14:43Z",
		"pushed_at": "2011-01-26T19:06:43Z", "license": nil, "topics": []any{}, "visibility": "public",
		"open_issues_count": 0, "has_issues": true, "homepage": nil, "language": "Nix"}
	if pushShape { // a push's repository has Unix timestamps, as GitHub sends them
		m["created_at"], m["pushed_at"] = 1296068472, 1700000000
		m["master_branch"] = r.branch()
		m["stargazers"] = 0
	}
	return m
}

func (r Repo) installation() map[string]any {
	return map[string]any{"id": r.Installation, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
}

// PR describes a pull request.
type PR struct {
	Number            int
	Head, Base        string // commits
	HeadRef           string // default feature
	Author            string // default octocat
	AuthorAssociation string // default CONTRIBUTOR
	Draft             bool
	Before            string // synchronize: the previous head
}

func (p PR) pullRequest(r Repo) map[string]any {
	author, ref, assoc := p.Author, p.HeadRef, p.AuthorAssociation
	if author == "" {
		author = "octocat"
	}
	if ref == "" {
		ref = "feature"
	}
	if assoc == "" {
		assoc = "CONTRIBUTOR"
	}
	side := func(label, ref, sha string) map[string]any {
		return map[string]any{"label": r.Owner + ":" + ref, "ref": ref, "sha": sha, "user": user(r.Owner, 1), "repo": r.repository(false)}
	}
	return map[string]any{"url": fmt.Sprintf("https://api.github.com/repos/%s/pulls/%d", r.full(), p.Number),
		"id": 1000 + p.Number, "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==", "html_url": fmt.Sprintf("https://github.com/%s/pull/%d", r.full(), p.Number),
		"number": p.Number, "state": "open", "locked": false, "title": "Amazing new feature", "user": user(author, 2),
		"body": "Please pull these awesome changes in!", "created_at": "2011-01-26T19:01:12Z", "updated_at": "2011-01-26T19:01:12Z",
		"closed_at": nil, "merged_at": nil, "merge_commit_sha": nil, "assignee": nil, "assignees": []any{},
		"requested_reviewers": []any{}, "labels": []any{}, "milestone": nil, "draft": p.Draft,
		"head": side("head", ref, p.Head), "base": side("base", r.branch(), p.Base),
		"_links":             map[string]any{"self": map[string]any{"href": "https://api.github.com/repos/" + r.full() + "/pulls/1"}},
		"author_association": assoc, "auto_merge": nil, "active_lock_reason": nil, "merged": false, "mergeable": nil,
		"rebaseable": nil, "mergeable_state": "unknown", "merged_by": nil, "comments": 0, "commits": 1, "additions": 1,
		"deletions": 0, "changed_files": 1,
		// Not RFC 3339, as some real payloads have carried in nested objects.
		"head_commit_meta": map[string]any{"timestamp": "2024-01-01 10:00:00 +0100"}}
}

// PullRequest is a pull_request delivery with action (opened,
// synchronize, closed, ...).
func PullRequest(r Repo, action string, p PR) []byte {
	m := map[string]any{"action": action, "number": p.Number, "pull_request": p.pullRequest(r), "repository": r.repository(false),
		"installation": r.installation(), "sender": user("octocat", 2)}
	if action == "synchronize" {
		m["before"], m["after"] = p.Before, p.Head
	}
	return mustJSON(m)
}

// Push is a push delivery of ref (e.g. refs/heads/main) from before to
// after; after all zeros with deleted set is a deleted branch.
func Push(r Repo, ref, before, after string, deleted bool) []byte {
	var head any = map[string]any{"id": after, "tree_id": strings.Repeat("f", 40), "distinct": true, "message": "Update",
		"timestamp": "2015-05-05T19:40:15-04:00", "url": "https://github.com/" + r.full() + "/commit/" + after,
		"author": map[string]any{"name": "Monalisa", "email": "mona@github.com", "username": "mona"}, "added": []any{}, "removed": []any{}, "modified": []any{"default.nix"}}
	if deleted {
		head = nil
	}
	return mustJSON(map[string]any{"ref": ref, "before": before, "after": after, "created": false, "deleted": deleted,
		"forced": false, "base_ref": nil, "compare": "https://github.com/" + r.full() + "/compare/x...y", "commits": []any{},
		"head_commit": head, "repository": r.repository(true), "pusher": map[string]any{"name": "mona", "email": "mona@github.com"},
		"installation": r.installation(), "sender": user("mona", 3)})
}

func (p PR) short(r Repo) map[string]any {
	return map[string]any{"url": fmt.Sprintf("https://api.github.com/repos/%s/pulls/%d", r.full(), p.Number), "id": 1000 + p.Number, "number": p.Number,
		"head": map[string]any{"ref": "feature", "sha": p.Head, "repo": map[string]any{"id": 1, "url": "https://api.github.com/repos/" + r.full(), "name": r.Name}},
		"base": map[string]any{"ref": r.branch(), "sha": p.Base, "repo": map[string]any{"id": 1, "url": "https://api.github.com/repos/" + r.full(), "name": r.Name}}}
}

func (r Repo) suite(head string, prs []PR) map[string]any {
	var short []any
	for _, p := range prs {
		short = append(short, p.short(r))
	}
	return map[string]any{"id": 5, "node_id": "MDEwOkNoZWNrU3VpdGU1", "head_branch": "feature", "head_sha": head, "status": "completed",
		"conclusion": "failure", "url": "https://api.github.com/repos/" + r.full() + "/check-suites/5", "before": nil, "after": head,
		"pull_requests": short, "app": map[string]any{"id": 1, "slug": "ekaci", "name": "ekaci", "owner": user(r.Owner, 1),
			"created_at": "2018-04-01T00:00:00Z", "updated_at": "2018-04-01T00:00:00Z"},
		"created_at": "2018-05-04T01:14:52Z", "updated_at": "2018-05-04T01:14:52Z"}
}

// CheckRunEvent is a check_run delivery (rerequested, requested_action) for a
// check run of ekaci's; action identifier is set for requested_action.
func CheckRunEvent(r Repo, action string, runID int64, name, head string, pr PR, identifier, sender string) []byte {
	run := map[string]any{"id": runID, "name": name, "node_id": "MDg6Q2hlY2tSdW40", "head_sha": head, "external_id": "",
		"url": "https://api.github.com/repos/" + r.full() + "/check-runs/4", "status": "completed", "conclusion": "failure",
		"started_at": "2018-05-04T01:14:52Z", "completed_at": "2018-05-04T01:14:52Z",
		"output":      map[string]any{"title": "x", "summary": "y", "text": nil, "annotations_count": 0},
		"check_suite": r.suite(head, []PR{pr}), "app": nil, "pull_requests": []any{pr.short(r)}}
	m := map[string]any{"action": action, "check_run": run, "repository": r.repository(false), "installation": r.installation(),
		"sender": user(sender, 4)}
	if identifier != "" {
		m["requested_action"] = map[string]any{"identifier": identifier}
	}
	return mustJSON(m)
}

// CheckSuiteEvent is a check_suite delivery (e.g. rerequested).
func CheckSuiteEvent(r Repo, action, head string, pr PR) []byte {
	return mustJSON(map[string]any{"action": action, "check_suite": r.suite(head, []PR{pr}), "repository": r.repository(false),
		"installation": r.installation(), "sender": user("octocat", 2)})
}

// MergeGroup is a merge_group checks_requested delivery.
func MergeGroup(r Repo, head, base string, pr PR) []byte {
	ref := fmt.Sprintf("refs/heads/gh-readonly-queue/%s/pr-%d-%s", r.branch(), pr.Number, base)
	return mustJSON(map[string]any{"action": "checks_requested", "merge_group": map[string]any{"head_sha": head, "head_ref": ref,
		"base_sha": base, "base_ref": "refs/heads/" + r.branch(),
		"head_commit": map[string]any{"id": head, "tree_id": strings.Repeat("e", 40), "message": "Merge pull request",
			"timestamp": "2019-05-15T15:20:30Z", "author": map[string]any{"name": "Monalisa", "email": "mona@github.com"}}},
		"repository": r.repository(false), "installation": r.installation(), "sender": user("mona", 3)})
}

// Installation is an installation delivery (created, deleted, suspend,
// ...) for repos; all sets repository_selection "all".
func Installation(id int64, account, action string, all bool, repos ...string) []byte {
	sel := "selected"
	if all {
		sel = "all"
	}
	var list []any
	for _, r := range repos {
		_, name, _ := strings.Cut(r, "/")
		list = append(list, map[string]any{"id": 1, "node_id": "x", "name": name, "full_name": r, "private": false})
	}
	return mustJSON(map[string]any{"action": action, "installation": map[string]any{"id": id, "account": user(account, 1),
		"repository_selection": sel, "access_tokens_url": fmt.Sprintf("https://api.github.com/app/installations/%d/access_tokens", id),
		"app_id": 4242, "target_type": "Organization", "permissions": map[string]any{"checks": "write", "contents": "read",
			"metadata": "read", "pull_requests": "read"}, "events": []any{"pull_request", "push"},
		"created_at": 1501449845, "updated_at": "2017-07-30T21:24:05.000+00:00", "single_file_name": nil, "suspended_at": nil},
		"repositories": list, "requester": nil, "sender": user(account, 1)})
}

// InstallationRepositories is an installation_repositories delivery.
func InstallationRepositories(id int64, account, action string, added, removed []string) []byte {
	list := func(names []string) []any {
		out := []any{}
		for _, r := range names {
			_, name, _ := strings.Cut(r, "/")
			out = append(out, map[string]any{"id": 1, "node_id": "x", "name": name, "full_name": r, "private": false})
		}
		return out
	}
	return mustJSON(map[string]any{"action": action, "installation": map[string]any{"id": id, "account": user(account, 1),
		"repository_selection": "selected", "created_at": 1501449845},
		"repository_selection": "selected", "repositories_added": list(added), "repositories_removed": list(removed),
		"requester": nil, "sender": user(account, 1)})
}

// Ping is the ping GitHub sends when a hook is created.
func Ping() []byte {
	return mustJSON(map[string]any{"zen": "Keep it logically awesome.", "hook_id": 109948940,
		"hook": map[string]any{"type": "App", "id": 109948940, "active": true, "events": []any{"pull_request"},
			"config":     map[string]any{"content_type": "json", "insecure_ssl": "0", "url": "https://example.com/webhook"},
			"updated_at": "2019-04-04T12:56:47Z", "created_at": "2019-04-04T12:56:47Z", "app_id": 4242}})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Sign is the X-Hub-Signature-256 of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Deliver POSTs a delivery as GitHub does (headers included) and returns
// the answer's status and body; signature "" signs with secret.
func Deliver(ctx context.Context, url string, secret []byte, event, delivery string, body []byte, signature string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if signature == "" {
		signature = Sign(secret, body)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/044aadd")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-GitHub-Hook-ID", "109948940")
	req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	req.Header.Set("X-Hub-Signature-256", signature)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}
