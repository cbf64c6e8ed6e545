// Package checkname is the one place ekaci's GitHub check-run names are
// spelled (README, "Check runs", lists them): the webhook, the notifier
// and the checks all name their runs here, so a name seen on a pull
// request is always found by the code that updates it.
package checkname

import "strings"

// Prefix starts every gate's name, so ekaci's runs group together.
const Prefix = "ekaci: "

const (
	// Configure is the configure gate of a change: checkout and
	// .ekaci/config.json.
	Configure = Prefix + "configure"
	// Approval is the run a pull request from an author who is not
	// approved gets instead of a build, with an "Approve and run" button.
	Approval = Prefix + "approval required"
	// ApproveAction is the identifier of Approval's button.
	ApproveAction = "approve"
)

// maxName is GitHub's limit on a check run's name.
const maxName = 255

// Job is the evaluation gate of one job.
func Job(job string) string { return bound(Prefix + job) }

// Attr is the run of one failed new or changed attribute of a job.
func Attr(attr, job string) string { return bound(attr + " (" + job + ")") }

// Check is the run of one configured check.
func Check(name string) string { return bound(Prefix + "check " + name) }

// bound keeps a name within GitHub's limit, cutting at a rune boundary.
func bound(s string) string {
	if len(s) <= maxName {
		return s
	}
	r := []rune(s)
	for len(string(r)) > maxName-len("…") {
		r = r[:len(r)-1]
	}
	return strings.TrimSpace(string(r)) + "…"
}
