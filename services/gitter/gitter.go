// Package gitter checks out the revisions of each requested change: one
// bare mirror per repository (cloned once, fetched after) and a git
// worktree per commit under test, owned by the change and removed, with
// the change's GC roots, when it concludes.
//
// It decides whether a change's commits can be checked out (checked_out or
// checkout_failed).
//
// Each request ends in exactly one fact, checked_out or checkout_failed,
// appended only right after the request (ExpectLast on the change), so a
// request redelivered at any later time, duplicate window or not, decides
// nothing twice and makes no worktree nobody will remove. A repository or
// commit git says does not exist, or a commit that is not a full commit
// id, fails the checkout at once with git's message; a transient error
// (network, server, disk) is retried with back-off, and after the last try
// the checkout fails saying so: the change concludes either way, and can
// be requested again (see package request).
package gitter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/gitter/internal/mirror"
	"github.com/ekaci/ekaci/services/gitter/request"
)

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	// GitDir holds the mirrors and worktrees; the reader and evaluator
	// must see the same paths (a shared volume in a mesh).
	GitDir string
	// GCRootsDir is where the evaluator roots each change's .drv files,
	// one directory per change (<GCRootsDir>/<change id>/...); the gitter
	// removes a change's directory when the change concludes. Empty:
	// nothing to remove.
	GCRootsDir string
	// Metrics, when set, counts requests given up (ekaci_messages_given_up_total).
	Metrics *telemetry.Metrics
	// Backoff is the first retry delay of a transient git error, doubling
	// per try up to 30 s (default 2 s); MaxDeliver the tries before the
	// checkout fails (default 8: about two minutes of retries).
	Backoff    time.Duration
	MaxDeliver int
	// Concurrency is how many changes are checked out at once (default 2).
	Concurrency int
	// Tokens, when set, gives installation tokens for the HTTPS fetches of
	// changes that came from a GitHub App installation (private
	// repositories). A token reaches git through its environment only:
	// never a file, a git config, a log line or an event.
	Tokens TokenSource
	// CloneURLs maps a clone URL's prefix to another (a mirror, or a
	// local path in tests); the longest matching prefix wins.
	CloneURLs map[string]string
}

// TokenSource gives a GitHub App installation's token (githubapp.App).
type TokenSource interface {
	Token(ctx context.Context, installation int64) (string, error)
}

// fetchURL is where a request's repository is fetched from.
func (c Config) fetchURL(repoURL string) string {
	best := ""
	for from := range c.CloneURLs {
		if strings.HasPrefix(repoURL, from) && len(from) > len(best) {
			best = from
		}
	}
	if best == "" {
		return repoURL
	}
	return c.CloneURLs[best] + strings.TrimPrefix(repoURL, best)
}

// fetchEnv is the environment that authenticates a fetch of url for req.
func (c Config) fetchEnv(ctx context.Context, url string, req *eventsv1.ChangeRequested) ([]string, error) {
	inst := req.GetGithub().GetInstallationId()
	if c.Tokens == nil || inst == 0 || !strings.HasPrefix(url, "https://") {
		return nil, nil
	}
	tok, err := c.Tokens.Token(ctx, inst)
	if err != nil {
		// Transient: the token service (GitHub) may answer on a retry.
		return nil, fmt.Errorf("%w: %w", mirror.ErrTransient, err)
	}
	return mirror.TokenEnv(url, tok), nil
}

// maxErrorBytes bounds git's message in a checkout_failed fact.
const maxErrorBytes = 4 << 10

// Run checks out changes until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	store, err := mirror.New(cfg.GitDir)
	if err != nil {
		return fmt.Errorf("git store %s: %w", cfg.GitDir, err)
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 2 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 8
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	g := &stage{cfg: cfg, store: store}
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.GitterDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Change, "requested"), eventlog.FactFilter(eventlog.Change, "concluded")},
		AckWait: time.Minute, Concurrency: cfg.Concurrency, MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff,
		// One message per slot: a request waiting behind long clones is
		// not redelivered to be checked out twice.
		MaxAckPending: cfg.Concurrency,
		GiveUp:        g.giveUp,
		GaveUp:        cfg.Metrics.CountGiveUp,
	}, g.handle, cfg.Logger)
}

type stage struct {
	cfg   Config
	store *mirror.Store
	// locks serialize the work on one change (its checkout and its
	// cleanup) within this process; striped, so they never grow.
	locks [64]sync.Mutex
}

func (g *stage) lock(changeID string) func() {
	h := fnv.New32a()
	h.Write([]byte(changeID))
	m := &g.locks[h.Sum32()%uint32(len(g.locks))]
	m.Lock()
	return m.Unlock
}

func (g *stage) handle(ctx context.Context, m jetstream.Msg) error {
	rec, err := eventlog.DecodeMsg(m)
	if err != nil {
		return worker.Permanent(err)
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ChangeRequested:
		return g.request(ctx, rec, p.ChangeRequested)
	case *eventsv1.Event_ChangeConcluded:
		return g.cleanup(ctx, rec)
	}
	return nil
}

// request checks out one change request and records the outcome, unless
// the change has moved on since the request (a redelivery of a request
// already checked out, perhaps long concluded and cleaned up).
func (g *stage) request(ctx context.Context, rec eventlog.Record, req *eventsv1.ChangeRequested) error {
	defer g.lock(rec.ID)()
	_, last, err := g.cfg.Events.Load(ctx, eventlog.Change, rec.ID)
	if err != nil {
		return err
	}
	if last != rec.Seq {
		g.cfg.Logger.Debug().Str("change", rec.ID).Uint64("request_seq", rec.Seq).Uint64("last_seq", last).Msg("request already handled")
		return nil
	}
	ev, err := g.checkout(ctx, rec.ID, req)
	if err != nil {
		return err
	}
	return g.record(ctx, rec, ev)
}

// record appends the request's outcome right after the request; a
// conflict means an outcome already landed (this one's earlier try, or
// the give-up's), which is the fact that counts.
func (g *stage) record(ctx context.Context, rec eventlog.Record, ev *eventsv1.Event) error {
	ev.CausationId, ev.CorrelationId = rec.Event.GetId(), rec.ID
	_, err := g.cfg.Events.Append(ctx, rec.ID, ev, eventlog.ExpectLast(rec.Seq))
	if errors.Is(err, eventlog.ErrConflict) {
		g.cfg.Logger.Info().Str("change", rec.ID).Msg("checkout already recorded")
		return nil
	}
	return err
}

// giveUp records the checkout failure of a request the worker stops
// retrying, so the change concludes.
func (g *stage) giveUp(ctx context.Context, m jetstream.Msg, cause error) error {
	rec, err := eventlog.DecodeMsg(m)
	if err != nil {
		return fmt.Errorf("no change to fail: %w", err)
	}
	req := rec.Event.GetChangeRequested()
	if req == nil {
		return nil // a cleanup given up leaves disk behind, no change waiting
	}
	tries := uint64(1)
	if md, err := m.Metadata(); err == nil {
		tries = md.NumDelivered
	}
	kind := "an error"
	if errors.Is(cause, mirror.ErrTransient) {
		kind = "a transient error"
	}
	msg := fmt.Sprintf("checkout of %s at %s gave up after %d tries on %s (request the change again to retry): %v",
		req.GetRepoUrl(), req.GetHeadCommit(), tries, kind, cause)
	return g.record(ctx, rec, failedEvent(rec.ID, msg))
}

// cleanup removes a concluded change's worktrees and GC roots: nothing
// reads them once every jobset has concluded. What is left behind costs
// disk, not correctness, so failures are logged, not retried.
func (g *stage) cleanup(ctx context.Context, rec eventlog.Record) error {
	changeID := rec.ID
	defer g.lock(changeID)()
	recs, _, err := g.cfg.Events.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return err
	}
	for _, r := range recs {
		req := r.Event.GetChangeRequested()
		if req == nil {
			continue
		}
		for _, commit := range []string{req.GetHeadCommit(), req.GetBaseCommit()} {
			if !request.IsCommit(commit) {
				continue // never checked out (refused), so no worktree
			}
			if err := g.store.Remove(ctx, g.cfg.fetchURL(req.GetRepoUrl()), commit, changeID); err != nil {
				g.cfg.Logger.Warn().Err(err).Str("change", changeID).Msg("could not remove a worktree")
			}
		}
	}
	if g.cfg.GCRootsDir != "" && eventlog.ValidToken(changeID) {
		// A token has no '/' and no dots: the path stays inside GCRootsDir.
		if err := os.RemoveAll(filepath.Join(g.cfg.GCRootsDir, changeID)); err != nil {
			g.cfg.Logger.Warn().Err(err).Str("change", changeID).Msg("could not remove the change's GC roots")
		}
	}
	return nil
}

func failedEvent(changeID, msg string) *eventsv1.Event {
	return &eventsv1.Event{Id: eventlog.CheckoutFailedID(changeID),
		Payload: &eventsv1.Event_ChangeCheckoutFailed{ChangeCheckoutFailed: &eventsv1.ChangeCheckoutFailed{Error: text.Bound(msg, maxErrorBytes)}}}
}

// checkout returns the fact to record: checked out, or failed for a reason
// no retry can fix. Other errors are returned for a retry.
func (g *stage) checkout(ctx context.Context, changeID string, req *eventsv1.ChangeRequested) (*eventsv1.Event, error) {
	if err := request.Check(req, "gitter"); err != nil {
		return failedEvent(changeID, err.Error()), nil
	}
	store, url := g.store, g.cfg.fetchURL(req.GetRepoUrl())
	failed := func(err error) (*eventsv1.Event, error) {
		if errors.Is(err, mirror.ErrUnknownRepo) || errors.Is(err, mirror.ErrUnknownCommit) || errors.Is(err, mirror.ErrBadCommit) {
			return failedEvent(changeID, err.Error()), nil
		}
		return nil, err
	}
	env, err := g.cfg.fetchEnv(ctx, url, req)
	if err != nil {
		return nil, err
	}
	if _, err := store.SyncWith(ctx, url, env); err != nil {
		return failed(err)
	}
	out := &eventsv1.ChangeCheckedOut{HeadCommit: req.GetHeadCommit(), BaseCommit: req.GetBaseCommit()}
	if out.HeadWorktree, err = store.Worktree(ctx, url, req.GetHeadCommit(), changeID); err != nil {
		return failed(fmt.Errorf("head %s: %w", req.GetHeadCommit(), err))
	}
	if req.GetBaseCommit() != "" {
		if out.BaseWorktree, err = store.Worktree(ctx, url, req.GetBaseCommit(), changeID); err != nil {
			return failed(fmt.Errorf("base %s: %w", req.GetBaseCommit(), err))
		}
	}
	return &eventsv1.Event{Id: eventlog.CheckedOutID(changeID), Payload: &eventsv1.Event_ChangeCheckedOut{ChangeCheckedOut: out}}, nil
}
