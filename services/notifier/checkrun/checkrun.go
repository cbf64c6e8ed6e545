// Package checkrun answers on GitHub: it turns the facts of every change
// that came from a GitHub App delivery into check runs on its head
// commit, named by libs/githubapp/checkname:
//
//   - "ekaci: configure", one per change: in progress from the request,
//     concluded by the checkout and .ekaci/config.json (failure when
//     either was refused, neutral when no CI is configured);
//   - "ekaci: <job>", one per job: in progress while it evaluates and
//     builds, concluded with its jobset (also when there was nothing to
//     build or the evaluation failed), with a summary of counts and the
//     failures grouped by root cause (summary.go);
//   - "ekaci: check <name>", one per configured check (checks.go):
//     queued, in progress while it runs, completed with how it ended
//     (neutral when the base fails it too);
//   - "<attr> (<job>)", one per new or changed attribute that failed,
//     created when its jobset concludes (so a large pull request is not
//     flooded with runs of what succeeded), at most MaxAttrRuns a job.
//
// It decides nothing: it reports what the recorder concluded. Each run's
// id is kept in a bbolt read model (and found again by its external id
// through the API after a crash between creating it and recording it),
// so a redelivered or replayed fact, or a restarted notifier, never
// creates a second run for the same thing. GitHub's rate limits and
// server errors are retried as githubapp.Retry says; a request GitHub
// refuses for good is logged and dropped.
package checkrun

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

// DefaultMaxAttrRuns bounds the attribute runs of one job; the gate's
// summary lists every failure and says how many runs were left out.
const DefaultMaxAttrRuns = 50

// maxRootLookups bounds the root causes whose log tail is looked up.
const maxRootLookups = 20

// Clients gives a go-github client per installation (githubapp.App).
type Clients interface {
	Client(installation int64) *github.Client
}

// Config wires the publisher.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	App    Clients
	// DataDir holds the read model, notifier-github.db.
	DataDir string
	// Retry bounds each API call's retries.
	Retry githubapp.Retry
	// LogURL, when set, links a derivation's full log: "{drv}" and
	// "{attempt}" are replaced (e.g. https://ci.example/logs/{drv}/{attempt}).
	// Empty: the summary names the log file on the ekaci server.
	LogURL string
	// MaxAttrRuns bounds the attribute runs of one job (default 50).
	MaxAttrRuns int
	// DetailsURL, when set, is every run's details link.
	DetailsURL string
	// ProgressEvery is how often a building gate's progress is sent at
	// most (default 5 s).
	ProgressEvery time.Duration
	// AckWait is how long a fact a dead notifier was reporting waits
	// before it is delivered again (default 1 minute; a live one extends
	// it while it waits on GitHub).
	AckWait time.Duration
}

// Publisher posts check runs.
type Publisher struct {
	cfg   Config
	store *store
	// mu serializes the runs' updates: progress, sent from its own
	// consumer, must never land after a conclusion.
	mu     sync.Mutex
	recent recent
	// dirty are the jobsets whose progress moved since the last tick.
	dirtyMu sync.Mutex
	dirty   map[string]bool
}

// Open opens the read model.
func Open(cfg Config) (*Publisher, error) {
	if cfg.MaxAttrRuns <= 0 {
		cfg.MaxAttrRuns = DefaultMaxAttrRuns
	}
	s, err := openStore(filepath.Join(cfg.DataDir, "notifier-github.db"))
	if err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, store: s}, nil
}

// Close closes the read model.
func (p *Publisher) Close() error { return p.store.Close() }

// Filters are the facts the publisher reads.
var Filters = []string{
	eventlog.FactFilter(eventlog.Change, "requested"), eventlog.FactFilter(eventlog.Change, "checkout_failed"),
	eventlog.FactFilter(eventlog.Change, "config_read"), eventlog.FactFilter(eventlog.Change, "config_invalid"),
	eventlog.FactFilter(eventlog.Change, "cancelled"),
	eventlog.FactFilter(eventlog.Jobset, "created"), eventlog.FactFilter(eventlog.Jobset, "evaluated"),
	eventlog.FactFilter(eventlog.Jobset, "attrs_listed"),
	eventlog.FactFilter(eventlog.Jobset, "concluded"), eventlog.FactFilter(eventlog.Jobset, "cancelled"),
	eventlog.FactFilter(eventlog.Jobset, "restarted"),
	eventlog.FactFilter(eventlog.Check, "queued"), eventlog.FactFilter(eventlog.Check, "started"),
	eventlog.FactFilter(eventlog.Check, "succeeded"), eventlog.FactFilter(eventlog.Check, "failed"),
	eventlog.FactFilter(eventlog.Check, "interrupted"),
}

// Run publishes until ctx ends, through its own durable consumer.
func Run(ctx context.Context, cfg Config) error {
	p, err := Open(cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.runProgress(ctx) })
	g.Go(func() error { return p.run(ctx) })
	return g.Wait()
}

func (p *Publisher) run(ctx context.Context) error {
	cfg := p.cfg
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.GitHubNotifierDurable, Filters: Filters,
		// One at a time, in order: a run is created before it is updated.
		Concurrency: 1, MaxAckPending: 1, AckWait: cmp.Or(cfg.AckWait, time.Minute), MaxDeliver: 20, Backoff: time.Second,
	}, func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		return p.Handle(ctx, rec)
	}, cfg.Logger)
}

// Handle reports one fact. It is idempotent.
func (p *Publisher) Handle(ctx context.Context, rec eventlog.Record) error {
	err := p.handle(ctx, rec)
	if errors.Is(err, githubapp.ErrRefused) {
		p.cfg.Logger.Error().Err(err).Str("event", rec.Event.GetId()).Msg("GitHub refused a check-run request; dropped")
		return nil
	}
	return err
}

func (p *Publisher) handle(ctx context.Context, rec eventlog.Record) error {
	if ok, err := p.check(ctx, rec.ID, rec.Event); ok {
		return err
	}
	switch ev := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ChangeRequested:
		return p.requested(ctx, rec.ID, ev.ChangeRequested)
	case *eventsv1.Event_ChangeCheckoutFailed:
		return p.configure(ctx, rec.ID, Failure, "Checkout failed", fence(ev.ChangeCheckoutFailed.GetError(), 4000))
	case *eventsv1.Event_ChangeConfigInvalid:
		c := ev.ChangeConfigInvalid
		return p.configure(ctx, rec.ID, Failure, "Invalid "+c.GetPath(), fence(c.GetError(), 4000))
	case *eventsv1.Event_ChangeConfigRead:
		c := ev.ChangeConfigRead
		if !c.GetConfigured() {
			return p.configure(ctx, rec.ID, Neutral, "No CI configured", "This repository has no `.ekaci/config.json` at this commit: nothing to evaluate or build.")
		}
		return p.configure(ctx, rec.ID, Success, fmt.Sprintf("%d jobs", len(c.GetJobs())), "Jobs: "+codeList(c.GetJobs())+".")
	case *eventsv1.Event_ChangeCancelled:
		return p.configureCancelled(ctx, rec.ID, ev.ChangeCancelled.GetActor())
	case *eventsv1.Event_JobsetCreated:
		return p.jobsetCreated(ctx, rec.ID, ev.JobsetCreated)
	case *eventsv1.Event_JobsetAttrsListed:
		if _, _, ok, err := p.jobsetOf(rec.ID); !ok || err != nil {
			return err
		}
		return p.watch(rec.ID, ev.JobsetAttrsListed.GetAttrs())
	case *eventsv1.Event_JobsetEvaluated:
		e := ev.JobsetEvaluated
		if _, _, ok, err := p.jobsetOf(rec.ID); ok && err == nil {
			if err := p.watch(rec.ID, e.GetAttrs()); err != nil {
				return err
			}
		}
		n := e.GetAttrCount()
		if n == 0 {
			n = uint32(len(e.GetAttrs()))
		}
		return p.gateProgress(ctx, rec.ID, "Building", fmt.Sprintf("Evaluated in %s: %d attributes, %d derivations in their closure. Building what is not built yet.",
			time.Duration(e.GetDurationMs())*time.Millisecond, n, e.GetDrvCount()), false)
	case *eventsv1.Event_JobsetConcluded:
		return p.jobsetConcluded(ctx, rec.ID, ev.JobsetConcluded)
	case *eventsv1.Event_JobsetCancelled:
		return p.gateCancelled(ctx, rec.ID, ev.JobsetCancelled.GetActor())
	case *eventsv1.Event_JobsetRestarted:
		a := ev.JobsetRestarted.GetActor()
		return p.gateProgress(ctx, rec.ID, "Re-running failures", fmt.Sprintf("Failed and interrupted derivations are built again (asked by %s).", who(a)), true)
	}
	return nil
}

func who(a *eventsv1.Actor) string {
	if a == nil || a.GetWho() == "" {
		return "someone"
	}
	s := a.GetWho()
	if a.GetReason() != "" {
		s += ": " + a.GetReason()
	}
	return s
}

func codeList(items []string) string {
	var out []string
	for _, s := range items {
		out = append(out, "`"+s+"`")
	}
	return strings.Join(out, ", ")
}

func (p *Publisher) requested(ctx context.Context, changeID string, r *eventsv1.ChangeRequested) error {
	o := r.GetGithub()
	if o == nil || o.GetInstallationId() == 0 || o.GetOwner() == "" || o.GetRepo() == "" {
		return nil // not from GitHub: nothing to answer on
	}
	ch := change{Installation: o.GetInstallationId(), Owner: o.GetOwner(), Repo: o.GetRepo(), Head: r.GetHeadCommit(),
		Base: r.GetBaseCommit(), PullRequest: o.GetPullRequest()}
	if err := p.store.put(changesBucket, changeID, ch); err != nil {
		return err
	}
	return p.ensure(ctx, changeID, ch, checkname.Configure, state{status: "in_progress", title: "Checking out",
		summary: fmt.Sprintf("Checking out `%s`%s and reading `.ekaci/config.json`.", short(r.GetHeadCommit()), against(r.GetBaseCommit()))})
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func against(base string) string {
	if base == "" {
		return ""
	}
	return " against its base `" + short(base) + "`"
}

func (p *Publisher) change(changeID string) (change, bool, error) {
	var ch change
	ok, err := p.store.get(changesBucket, changeID, &ch)
	return ch, ok, err
}

func (p *Publisher) configure(ctx context.Context, changeID, conclusion, title, summary string) error {
	ch, ok, err := p.change(changeID)
	if !ok || err != nil {
		return err
	}
	return p.ensure(ctx, changeID, ch, checkname.Configure, state{status: "completed", conclusion: conclusion, title: title, summary: summary})
}

func (p *Publisher) configureCancelled(ctx context.Context, changeID string, a *eventsv1.Actor) error {
	ch, ok, err := p.change(changeID)
	if !ok || err != nil {
		return err
	}
	var r run
	if found, err := p.store.get(runsBucket, runKey(changeID, checkname.Configure), &r); err != nil || (found && r.Completed) {
		return err
	}
	return p.ensure(ctx, changeID, ch, checkname.Configure, state{status: "completed", conclusion: Cancelled,
		title: "Cancelled", summary: "Cancelled by " + who(a) + "."})
}

func (p *Publisher) jobsetCreated(ctx context.Context, jobsetID string, c *eventsv1.JobsetCreated) error {
	ch, ok, err := p.change(c.GetChangeId())
	if !ok || err != nil {
		return err
	}
	if err := p.store.put(jobsetsBucket, jobsetID, jobset{Change: c.GetChangeId(), Job: c.GetJob()}); err != nil {
		return err
	}
	return p.ensure(ctx, c.GetChangeId(), ch, checkname.Job(c.GetJob()), state{status: "in_progress", title: "Evaluating",
		summary: fmt.Sprintf("Evaluating `%s`%s.", c.GetFile(), attrSuffix(c.GetAttr()))})
}

func attrSuffix(attr string) string {
	if attr == "" {
		return ""
	}
	return " attribute `" + attr + "`"
}

// jobsetOf returns a jobset's change, if it came from GitHub.
func (p *Publisher) jobsetOf(jobsetID string) (jobset, change, bool, error) {
	var js jobset
	ok, err := p.store.get(jobsetsBucket, jobsetID, &js)
	if !ok || err != nil {
		return js, change{}, false, err
	}
	ch, ok, err := p.change(js.Change)
	return js, ch, ok, err
}

func (p *Publisher) gateProgress(ctx context.Context, jobsetID, title, summary string, reopen bool) error {
	js, ch, ok, err := p.jobsetOf(jobsetID)
	if !ok || err != nil {
		return err
	}
	return p.ensure(ctx, js.Change, ch, checkname.Job(js.Job), state{status: "in_progress", title: title, summary: summary, reopen: reopen})
}

func (p *Publisher) gateCancelled(ctx context.Context, jobsetID string, a *eventsv1.Actor) error {
	js, ch, ok, err := p.jobsetOf(jobsetID)
	if !ok || err != nil {
		return err
	}
	js.Cancelled = who(a)
	if err := p.store.put(jobsetsBucket, jobsetID, js); err != nil {
		return err
	}
	return p.ensure(ctx, js.Change, ch, checkname.Job(js.Job), state{status: "completed", conclusion: Cancelled,
		title: "Cancelled", summary: "Cancelled by " + who(a) + "."})
}

func (p *Publisher) jobsetConcluded(ctx context.Context, jobsetID string, c *eventsv1.JobsetConcluded) error {
	js, ch, ok, err := p.jobsetOf(jobsetID)
	if !ok || err != nil {
		return err
	}
	causes, err := p.causes(ctx, c)
	if err != nil {
		return err
	}
	cancelled := c.GetConclusion() == eventsv1.Conclusion_CONCLUSION_CANCELLED
	// Attribute runs first: the gate's summary says how many were left out.
	made, skipped := 0, 0
	for _, r := range c.GetResults() {
		if !failed(r) || !decides(r) || cancelled {
			// A run made when it failed before (a re-run since) says it
			// succeeds now; none is made for what did not fail.
			if err := p.passed(ctx, js, ch, r); err != nil {
				return err
			}
			continue
		}
		if made >= p.cfg.MaxAttrRuns {
			skipped++
			continue
		}
		made++
		cause := causes[r.GetDrvPath()]
		if r.GetCause() != "" {
			cause = causes[r.GetCause()]
		}
		out := AttrOutput(r, js.Job, cause)
		if err := p.ensure(ctx, js.Change, ch, checkname.Attr(r.GetAttr(), js.Job), state{status: "completed",
			conclusion: AttrConclusion(r), title: out.Title, summary: out.Summary}); err != nil {
			return err
		}
	}
	out := JobSummary(c, causes)
	if cancelled && js.Cancelled != "" {
		out.Title = "Cancelled by " + js.Cancelled
		out.Summary = "Cancelled by " + js.Cancelled + ".\n\n" + out.Summary
	}
	if skipped > 0 {
		out.Summary = fmt.Sprintf("%d failed attributes got no check run of their own (at most %d a job); all are listed below.\n\n", skipped, p.cfg.MaxAttrRuns) + out.Summary
		if n := len([]rune(out.Summary)); n > MaxSummary {
			out.Summary = string([]rune(out.Summary)[:MaxSummary-1]) + "…"
		}
	}
	return p.ensure(ctx, js.Change, ch, checkname.Job(js.Job), state{status: "completed", conclusion: GateConclusion(c.GetConclusion()),
		title: out.Title, summary: out.Summary, reopen: true})
}

// passed updates the run of an attribute that failed before and no longer
// does; an attribute without a run gets none.
func (p *Publisher) passed(ctx context.Context, js jobset, ch change, r *eventsv1.AttrResult) error {
	if r.GetState() != stateSucceeded {
		return nil
	}
	name := checkname.Attr(r.GetAttr(), js.Job)
	var existing run
	found, err := p.store.get(runsBucket, runKey(js.Change, name), &existing)
	if err != nil || !found {
		return err
	}
	return p.ensure(ctx, js.Change, ch, name, state{status: "completed", conclusion: Success, title: r.GetAttr() + " succeeded",
		summary: "It builds now (after a re-run).", reopen: true})
}

// causes looks up the log tail of each root cause's last failure.
func (p *Publisher) causes(ctx context.Context, c *eventsv1.JobsetConcluded) (map[string]Cause, error) {
	out := map[string]Cause{}
	for i, drvPath := range Roots(c) {
		if i == maxRootLookups {
			break
		}
		id, err := eventlog.DrvID(drvPath)
		if err != nil {
			continue
		}
		recs, _, err := p.cfg.Events.Load(ctx, eventlog.Drv, id)
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: %w", id, err)
		}
		var cause Cause
		var attempt uint32
		for _, r := range recs {
			switch f := r.Event.GetPayload().(type) {
			case *eventsv1.Event_DrvBuildFailed:
				cause.LogTail, attempt = f.DrvBuildFailed.GetLogTail(), f.DrvBuildFailed.GetAttempt()
			case *eventsv1.Event_DrvBuildFailedRetry:
				cause.LogTail, attempt = f.DrvBuildFailedRetry.GetLogTail(), f.DrvBuildFailedRetry.GetAttempt()
			case *eventsv1.Event_DrvInterrupted:
				cause.LogTail, attempt = f.DrvInterrupted.GetDetail(), f.DrvInterrupted.GetAttempt()
			}
		}
		if attempt > 0 {
			cause.LogRef = p.logRef(id, attempt)
		}
		out[drvPath] = cause
	}
	return out, nil
}

func (p *Publisher) logRef(drvID string, attempt uint32) string {
	if p.cfg.LogURL != "" {
		return strings.NewReplacer("{drv}", drvID, "{attempt}", fmt.Sprint(attempt)).Replace(p.cfg.LogURL)
	}
	return fmt.Sprintf("`logs/%s/%d.log.zst` in ekaci's data directory", drvID, attempt)
}

// state is what a run should show.
type state struct {
	status, conclusion, title, summary string
	// reopen lets an in-progress or new completed state replace a
	// completed run (a restart, a conclusion after a restart).
	reopen bool
}

func (s state) digest() string {
	h := sha256.New()
	for _, p := range []string{s.status, s.conclusion, s.title, s.summary} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ensure makes the named run of a change show s: created once, found
// again by its external id after a crash, updated only when s differs
// from what was last sent, and never reopened once completed unless
// s.reopen.
func (p *Publisher) ensure(ctx context.Context, changeID string, ch change, name string, s state) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := runKey(changeID, name)
	var r run
	found, err := p.store.get(runsBucket, key, &r)
	if err != nil {
		return err
	}
	if found && (r.Digest == s.digest() || r.Completed && s.status != "completed" && !s.reopen) {
		return nil
	}
	client := p.cfg.App.Client(ch.Installation)
	external := externalID(changeID)
	if !found {
		id, err := p.find(ctx, client, ch, name, external)
		if err != nil {
			return err
		}
		r.ID, found = id, id != 0
	}
	output := &github.CheckRunOutput{Title: github.String(bound(s.title, 1000)), Summary: github.String(boundRunes(s.summary, MaxSummary))}
	var conclusion *string
	if s.status == "completed" {
		conclusion = github.String(s.conclusion)
	}
	var details *string
	if p.cfg.DetailsURL != "" {
		details = github.String(p.cfg.DetailsURL)
	}
	if !found {
		opt := github.CreateCheckRunOptions{Name: name, HeadSHA: ch.Head, ExternalID: github.String(external), DetailsURL: details,
			Status: github.String(s.status), Conclusion: conclusion, Output: output}
		err = p.cfg.Retry.Do(ctx, "create check run "+name, func(ctx context.Context) (*github.Response, error) {
			cr, resp, err := client.Checks.CreateCheckRun(ctx, ch.Owner, ch.Repo, opt)
			r.ID = cr.GetID()
			return resp, err
		})
	} else {
		opt := github.UpdateCheckRunOptions{Name: name, Status: github.String(s.status), Conclusion: conclusion, Output: output, DetailsURL: details}
		err = p.cfg.Retry.Do(ctx, fmt.Sprintf("update check run %s (%d)", name, r.ID), func(ctx context.Context) (*github.Response, error) {
			_, resp, err := client.Checks.UpdateCheckRun(ctx, ch.Owner, ch.Repo, r.ID, opt)
			return resp, err
		})
	}
	if err != nil {
		return err
	}
	r.Digest, r.Completed = s.digest(), s.status == "completed"
	p.cfg.Logger.Debug().Str("change", changeID).Str("check", name).Int64("id", r.ID).Str("status", s.status).Str("conclusion", s.conclusion).Msg("check run")
	return p.store.put(runsBucket, key, r)
}

// externalID marks ekaci's runs of a change, to find them again.
func externalID(changeID string) string { return "ekaci/" + changeID }

// find looks for a run this change already has on GitHub (created by a
// life that died before recording its id).
func (p *Publisher) find(ctx context.Context, client *github.Client, ch change, name, external string) (int64, error) {
	var id int64
	err := p.cfg.Retry.Do(ctx, "list check runs "+name, func(ctx context.Context) (*github.Response, error) {
		list, resp, err := client.Checks.ListCheckRunsForRef(ctx, ch.Owner, ch.Repo, ch.Head,
			&github.ListCheckRunsOptions{CheckName: github.String(name), Filter: github.String("all"), ListOptions: github.ListOptions{PerPage: 100}})
		if list == nil {
			return resp, err
		}
		for _, cr := range list.CheckRuns {
			if cr.GetExternalID() == external && cr.GetName() == name {
				id = cr.GetID()
				break
			}
		}
		return resp, err
	})
	return id, err
}

func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return boundRunes(s, n)
}

// boundRunes keeps s within n characters (GitHub counts characters).
func boundRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
