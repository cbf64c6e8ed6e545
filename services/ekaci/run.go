package ekaci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/gitter/request"
)

// Request is one `ekaci run`.
type Request struct {
	Repo string // a local path, file:// or https:// URL
	Rev  string // head revision; default HEAD (local repositories only)
	Base string // optional base revision
}

// Resolve turns a request into a change: absolute repository location and
// full commit ids. Remote repositories need full commit ids.
func Resolve(ctx context.Context, req Request) (*eventsv1.ChangeRequested, error) {
	url := req.Repo
	local := !strings.Contains(url, "://")
	if local {
		abs, err := filepath.Abs(url)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(abs); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("repository %s: not a directory", abs)
		}
		url = abs
	}
	resolve := func(rev string) (string, error) {
		if request.IsCommit(rev) {
			return rev, nil
		}
		if !local {
			return "", fmt.Errorf("revision %q of %s: give a full commit id (40 or 64 lowercase hex digits) for remote repositories", rev, url)
		}
		if strings.HasPrefix(rev, "-") {
			return "", fmt.Errorf("revision %q of %s: a revision cannot start with '-'", rev, url)
		}
		out, err := exec.CommandContext(ctx, "git", "-C", url, "rev-parse", "--verify", "--quiet", rev+"^{commit}").Output()
		if err != nil {
			return "", fmt.Errorf("revision %q is not a commit in %s (git rev-parse: %v)", rev, url, err)
		}
		sha := strings.TrimSpace(string(out))
		if !request.IsCommit(sha) {
			return "", fmt.Errorf("revision %q of %s: git rev-parse gave %q, not a full commit id", rev, url, sha)
		}
		return sha, nil
	}
	if req.Rev == "" {
		req.Rev = "HEAD"
	}
	head, err := resolve(req.Rev)
	if err != nil {
		return nil, err
	}
	cr := &eventsv1.ChangeRequested{RepoUrl: url, HeadCommit: head, Source: "cli", RepoName: filepath.Base(strings.TrimSuffix(url, ".git"))}
	if req.Base != "" {
		if cr.BaseCommit, err = resolve(req.Base); err != nil {
			return nil, err
		}
	}
	return cr, nil
}

// Submit appends the change request and returns the change to follow:
// submitting the same change again joins the one already recorded (an
// earlier run, or a run cut off), unless its checkout failed, when it
// starts the change's next attempt (see package request). Commits must be
// full commit ids.
func Submit(ctx context.Context, log *eventlog.Log, cr *eventsv1.ChangeRequested) (string, error) {
	id := eventlog.ChangeID(cr.GetRepoUrl(), cr.GetHeadCommit(), cr.GetBaseCommit())
	got, err := request.Record(ctx, log, cr, eventlog.RequestedID(id), "ekaci run")
	if err != nil {
		return "", fmt.Errorf("submit change: %w", err)
	}
	return got.ChangeID, nil
}

// Outcome is a concluded change.
type Outcome struct {
	ChangeID   string
	Conclusion eventsv1.Conclusion
	Summary    string
	Jobsets    []*eventsv1.JobsetConcluded
	// Checks are the change's checks' endings (check_succeeded,
	// check_failed or check_interrupted), in name order.
	Checks []*eventsv1.Event
}

// Wait follows the change's facts, writing progress lines to progress,
// until it concludes. Progress counts every derivation event from the
// change's request on: in `ekaci run` that is this change's closure; on a
// shared server it includes whatever else is building.
func Wait(ctx context.Context, log *eventlog.Log, changeID string, progress io.Writer) (*Outcome, error) {
	recs, _, err := log.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return nil, fmt.Errorf("follow change %s: %w", changeID, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("change %s was never requested", changeID)
	}
	stream, err := log.JetStream().Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: recs[0].Seq,
		FilterSubjects: []string{
			eventlog.AggregateFilter(eventlog.Change, changeID), eventlog.KindFilter(eventlog.Jobset), eventlog.KindFilter(eventlog.Drv),
			eventlog.KindFilter(eventlog.Check),
		}})
	if err != nil {
		return nil, fmt.Errorf("follow change %s: %w", changeID, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	jobsets := map[string]*eventsv1.JobsetConcluded{}
	checks := map[string]*eventsv1.Event{}
	counts := newProgress(progress)
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("waiting for change %s: %w", changeID, ctx.Err())
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil, fmt.Errorf("waiting for change %s: stopped", changeID)
			}
			return nil, err
		}
		rec, err := eventlog.DecodeFacts(m)
		if err != nil {
			return nil, err
		}
		if rec.Aggregate == eventlog.Drv {
			for t := range rec.Transitions() {
				counts.record(t.ID, t.Fact)
			}
			continue
		}
		if (rec.Aggregate == eventlog.Jobset || rec.Aggregate == eventlog.Check) && rec.Event.GetCorrelationId() != changeID {
			continue
		}
		switch p := rec.Event.GetPayload().(type) {
		case *eventsv1.Event_ChangeRequested:
			fmt.Fprintf(progress, "change %s: %s at %s\n", changeID, p.ChangeRequested.GetRepoUrl(), short(p.ChangeRequested.GetHeadCommit()))
		case *eventsv1.Event_ChangeCheckedOut:
			fmt.Fprintf(progress, "checked out %s\n", p.ChangeCheckedOut.GetHeadWorktree())
		case *eventsv1.Event_ChangeCheckoutFailed:
			fmt.Fprintf(progress, "checkout failed: %s\n", p.ChangeCheckoutFailed.GetError())
		case *eventsv1.Event_ChangeConfigRead:
			if p.ChangeConfigRead.GetConfigured() {
				fmt.Fprintf(progress, "config: jobs %v\n", p.ChangeConfigRead.GetJobs())
			}
		case *eventsv1.Event_ChangeConfigInvalid:
			fmt.Fprintf(progress, "config refused: %s\n", p.ChangeConfigInvalid.GetError())
		case *eventsv1.Event_JobsetEvaluated:
			fmt.Fprintf(progress, "evaluated jobset %s: %d attributes, %d derivations in the closure (%d ms)\n",
				rec.ID, max(int(p.JobsetEvaluated.GetAttrCount()), len(p.JobsetEvaluated.GetAttrs())), p.JobsetEvaluated.GetDrvCount(), p.JobsetEvaluated.GetDurationMs())
		case *eventsv1.Event_JobsetEvalFailed:
			fmt.Fprintf(progress, "evaluation of jobset %s failed: %s\n", rec.ID, p.JobsetEvalFailed.GetError())
		case *eventsv1.Event_JobsetConcluded:
			jobsets[rec.ID] = p.JobsetConcluded
			counts.flush()
			fmt.Fprintf(progress, "job %s concluded: %s\n", p.JobsetConcluded.GetJob(), conclusionName(p.JobsetConcluded.GetConclusion()))
		case *eventsv1.Event_CheckStarted:
			fmt.Fprintf(progress, "check %s started (attempt %d)\n", p.CheckStarted.GetName(), p.CheckStarted.GetAttempt())
		case *eventsv1.Event_CheckSucceeded, *eventsv1.Event_CheckFailed, *eventsv1.Event_CheckInterrupted:
			checks[rec.ID] = rec.Event
			c := CheckOf(rec.Event)
			fmt.Fprintf(progress, "check %s: %s\n", c.Name, c.Describe())
		case *eventsv1.Event_ChangeConcluded:
			out := &Outcome{ChangeID: changeID, Conclusion: p.ChangeConcluded.GetConclusion(), Summary: p.ChangeConcluded.GetSummary()}
			for _, id := range p.ChangeConcluded.GetCheckIds() {
				if ev := checks[id]; ev != nil {
					out.Checks = append(out.Checks, ev)
				}
			}
			for _, id := range p.ChangeConcluded.GetJobsetIds() {
				if js := jobsets[id]; js != nil {
					out.Jobsets = append(out.Jobsets, js)
				}
			}
			return out, nil
		}
	}
}

// progress counts derivations by where they are and prints a line when
// the counts change, at most every progressEvery.
type progress struct {
	w       io.Writer
	state   map[string]string // drv id -> bucket
	last    time.Time
	printed string
}

const progressEvery = time.Second

func newProgress(w io.Writer) *progress { return &progress{w: w, state: map[string]string{}} }

// progressBucket is the progress line's bucket of a derivation after each
// fact. It reads facts, not buildstate.Next: progress starts mid-history
// for derivations an earlier change discovered (a requeued one's first
// fact here is requeued), which Next would refuse.
var progressBucket = map[string]string{
	"discovered": "queued", "requeued": "queued", "build_failed_retry": "queued", "buildable": "queued",
	"build_started": "running", "build_succeeded": "built",
	"build_failed": "failed", "interrupted": "failed", "dependency_failed": "failed", "blocked": "failed",
}

func (p *progress) record(id, fact string) {
	bucket := progressBucket[fact]
	if bucket == "" {
		return
	}
	p.state[id] = bucket
	if time.Since(p.last) >= progressEvery {
		p.flush()
	}
}

func (p *progress) flush() {
	n := map[string]int{}
	for _, b := range p.state {
		n[b]++
	}
	line := fmt.Sprintf("progress: %d derivations: %d built, %d running, %d queued, %d failed",
		len(p.state), n["built"], n["running"], n["queued"], n["failed"])
	p.last = time.Now()
	if line != p.printed && len(p.state) > 0 {
		fmt.Fprintln(p.w, line)
		p.printed = line
	}
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func conclusionName(c eventsv1.Conclusion) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "CONCLUSION_"))
}
