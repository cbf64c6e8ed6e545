package checkrun

import (
	"context"
	"fmt"
	"strings"
	"time"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

// check reports one fact of a check on its run "ekaci: check <name>":
// queued, in progress while a checker runs it, completed with how it
// ended. ok is false for any other fact.
func (p *Publisher) check(ctx context.Context, checkID string, ev *eventsv1.Event) (ok bool, err error) {
	var changeID, name string
	var s state
	switch e := ev.GetPayload().(type) {
	case *eventsv1.Event_CheckQueued:
		q := e.CheckQueued
		changeID, name = q.GetChangeId(), q.GetName()
		summary := fmt.Sprintf("`%s` waits for a checker.", oneLine(q.GetCommand()))
		if pk := q.GetPackages(); pk != nil {
			summary += fmt.Sprintf(" Its packages (%s of job `%s`) are built first.", codeList(pk.GetAttrs()), pk.GetJob())
		}
		s = state{status: "queued", title: "Queued", summary: summary}
	case *eventsv1.Event_CheckStarted:
		st := e.CheckStarted
		changeID, name = st.GetChangeId(), st.GetName()
		s = state{status: "in_progress", title: "Running", summary: fmt.Sprintf("Attempt %d, on checker `%s`.", st.GetAttempt(), st.GetChecker())}
	case *eventsv1.Event_CheckSucceeded:
		c := e.CheckSucceeded
		changeID, name = c.GetChangeId(), c.GetName()
		s = state{status: "completed", conclusion: Success, title: "Passed" + cachedNote(c.GetHead()),
			summary: fmt.Sprintf("Exited 0 in %s.%s", took(c.GetHead()), p.checkLog(checkID, c.GetAttempt(), c.GetHead()))}
	case *eventsv1.Event_CheckFailed:
		c := e.CheckFailed
		changeID, name = c.GetChangeId(), c.GetName()
		s = state{status: "completed", conclusion: Failure, title: fmt.Sprintf("Failed with exit code %d", c.GetHead().GetExitCode()) + cachedNote(c.GetHead())}
		s.summary = fmt.Sprintf("Exited %d after %s.%s%s", c.GetHead().GetExitCode(), took(c.GetHead()), p.checkLog(checkID, c.GetAttempt(), c.GetHead()), baseNote(c.GetBase(), c.GetBaseFailed()))
		if c.GetBaseFailed() {
			s.conclusion, s.title = Neutral, s.title+", as on the base"
		}
		s.summary += "\n\n" + fence(c.GetOutputTail(), 8000)
	case *eventsv1.Event_CheckInterrupted:
		c := e.CheckInterrupted
		changeID, name = c.GetChangeId(), c.GetName()
		kind := strings.ToLower(strings.TrimPrefix(c.GetKind().String(), "CHECK_INTERRUPT_KIND_"))
		s = state{status: "completed", conclusion: Failure, title: "Stopped: " + kind}
		s.summary = c.GetDetail() + "." + p.checkLog(checkID, c.GetAttempt(), c.GetHead()) + baseNote(c.GetBase(), c.GetBaseFailed())
		if c.GetBaseFailed() {
			s.conclusion, s.title = Neutral, s.title+", as on the base"
		}
		if c.GetOutputTail() != "" {
			s.summary += "\n\n" + fence(c.GetOutputTail(), 8000)
		}
	default:
		return false, nil
	}
	ch, found, err := p.change(changeID)
	if !found || err != nil {
		return true, err
	}
	return true, p.ensure(ctx, changeID, ch, checkname.Check(name), s)
}

func oneLine(s string) string { return bound(strings.ReplaceAll(s, "\n", " "), 200) }

func took(r *eventsv1.CheckRun) string {
	return (time.Duration(r.GetDurationMs()) * time.Millisecond).String()
}

func cachedNote(r *eventsv1.CheckRun) string {
	if r.GetCached() {
		return " (unchanged since an earlier run)"
	}
	return ""
}

func baseNote(base *eventsv1.CheckRun, failed bool) string {
	switch {
	case base == nil:
		return ""
	case failed:
		return " The base branch does not pass it either, so it does not fail this change."
	}
	return " The base branch passes it."
}

// checkLog names the run's log as logRef names a build's.
func (p *Publisher) checkLog(checkID string, attempt uint32, r *eventsv1.CheckRun) string {
	if r.GetLog() == "" {
		return ""
	}
	if p.cfg.LogURL != "" {
		return " Log: " + p.logRef(checkID, attempt) + "."
	}
	return fmt.Sprintf(" Log: `logs/%s` in ekaci's data directory.", r.GetLog())
}
