// Package gitter checks out the revisions of each requested change: one
// bare mirror per repository (cloned once, fetched after) and a git
// worktree per commit under test, owned by the change and removed when it
// concludes. A repository or commit git cannot find is recorded as a
// checkout failure carrying git's message, not retried.
package gitter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/gitter/internal/mirror"
)

// Config wires the stage.
type Config struct {
	Log    *eventlog.Log
	Logger zerolog.Logger
	// GitDir holds the mirrors and worktrees; the reader and evaluator
	// must see the same paths (a shared volume in a mesh).
	GitDir string
}

// Run checks out changes until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	store, err := mirror.New(cfg.GitDir)
	if err != nil {
		return fmt.Errorf("git store %s: %w", cfg.GitDir, err)
	}
	handle := func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		switch p := rec.Event.GetPayload().(type) {
		case *eventsv1.Event_ChangeRequested:
			ev, err := checkout(ctx, store, rec.ID, p.ChangeRequested)
			if err != nil {
				return err
			}
			ev.CausationId, ev.CorrelationId = rec.Event.GetId(), rec.ID
			_, err = cfg.Log.Append(ctx, rec.ID, ev)
			return err
		case *eventsv1.Event_ChangeConcluded:
			return cleanup(ctx, cfg, store, rec.ID)
		}
		return nil
	}
	return worker.Run(ctx, cfg.Log.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: "gitter",
		Filters: []string{eventlog.FactFilter(eventlog.Change, "requested"), eventlog.FactFilter(eventlog.Change, "concluded")},
		AckWait: time.Minute, Concurrency: 2, MaxDeliver: 5,
	}, handle, cfg.Logger)
}

// cleanup removes a concluded change's worktrees: nothing reads them once
// every jobset has concluded.
func cleanup(ctx context.Context, cfg Config, store *mirror.Store, changeID string) error {
	recs, _, err := cfg.Log.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return err
	}
	for _, r := range recs {
		req := r.Event.GetChangeRequested()
		if req == nil {
			continue
		}
		for _, commit := range []string{req.GetHeadCommit(), req.GetBaseCommit()} {
			if commit == "" {
				continue
			}
			if err := store.Remove(ctx, req.GetRepoUrl(), commit, changeID); err != nil {
				// A worktree left behind costs disk, not correctness.
				cfg.Logger.Warn().Err(err).Str("change", changeID).Msg("could not remove a worktree")
			}
		}
	}
	return nil
}

// checkout returns the fact to record: checked out, or failed for a reason
// no retry can fix. Other errors are returned for a retry.
func checkout(ctx context.Context, store *mirror.Store, changeID string, req *eventsv1.ChangeRequested) (*eventsv1.Event, error) {
	failed := func(err error) (*eventsv1.Event, error) {
		if errors.Is(err, mirror.ErrUnknownRepo) || errors.Is(err, mirror.ErrUnknownCommit) {
			return &eventsv1.Event{Id: "checkout-failed-" + eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit()),
				Payload: &eventsv1.Event_ChangeCheckoutFailed{ChangeCheckoutFailed: &eventsv1.ChangeCheckoutFailed{Error: err.Error()}}}, nil
		}
		return nil, err
	}
	if _, err := store.Sync(ctx, req.GetRepoUrl()); err != nil {
		return failed(err)
	}
	out := &eventsv1.ChangeCheckedOut{HeadCommit: req.GetHeadCommit(), BaseCommit: req.GetBaseCommit()}
	var err error
	if out.HeadWorktree, err = store.Worktree(ctx, req.GetRepoUrl(), req.GetHeadCommit(), changeID); err != nil {
		return failed(fmt.Errorf("head %s: %w", req.GetHeadCommit(), err))
	}
	if req.GetBaseCommit() != "" {
		if out.BaseWorktree, err = store.Worktree(ctx, req.GetRepoUrl(), req.GetBaseCommit(), changeID); err != nil {
			return failed(fmt.Errorf("base %s: %w", req.GetBaseCommit(), err))
		}
	}
	return &eventsv1.Event{Id: "checked-out-" + eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit()),
		Payload: &eventsv1.Event_ChangeCheckedOut{ChangeCheckedOut: out}}, nil
}
