package eventlog

import workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"

// Durable consumer names: the one place each is spelled, for the stage that
// consumes through it and for anyone who reads its state (the router reads a
// builder pool's backlog).
//
// A durable's name is its position in a stream. Renaming one on
// EventsStream makes the stage consume the whole stream again from the
// start (DeliverAllPolicy), re-deciding every fact it ever saw; its
// appends are guarded, so nothing lands twice, but it is a full replay.
// Renaming one on WorkStream (work-queue retention) orphans the old
// consumer: its pending and unacknowledged work stays with it, and the new
// one cannot even be created while the old one filters the same subjects.
const (
	// EvaluatorDurable consumes jobset_created on EventsStream.
	EvaluatorDurable = "evaluator"
	// GitterDurable consumes change requested and concluded on EventsStream.
	GitterDurable = "gitter"
	// ReaderDurable consumes change checked_out on EventsStream.
	ReaderDurable = "reader"
	// RouterDurable consumes drv buildable on EventsStream.
	RouterDurable = "router"
	// NotifierDurable consumes jobset and change concluded on EventsStream.
	NotifierDurable = "notifier"
	// CheckerDurable consumes check_queued on EventsStream, shared by
	// every checker (each queued check goes to one of them).
	CheckerDurable = "checker"
	// RecorderReportsDurable consumes builders' reports on WorkStream.
	RecorderReportsDurable = "recorder"
)

// BuilderDurable names the WorkStream consumer of the builder pool for a
// system and class, shared by every builder of that pool.
func BuilderDurable(system string, class workv1.BuildClass) string {
	return "builder-" + SystemToken(system) + "-" + ClassToken(class)
}

// GitHubNotifierDurable consumes, on EventsStream, the change and jobset
// facts the GitHub check runs report (services/notifier/checkrun).
const GitHubNotifierDurable = "notifier-github"

// GitHubProgressDurable consumes, on EventsStream, the derivation facts
// whose progress the GitHub check runs show while a job builds.
const GitHubProgressDurable = "notifier-github-progress"
