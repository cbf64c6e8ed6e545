// Package reader reads each checked-out change's .ekaci/config.json
// strictly and turns every job into a jobset. A missing file means no CI is
// configured; a bad one is recorded with the key path that is wrong.
//
// It decides what CI a change has: its jobs and checks (config_read,
// jobset_created, check_queued) or why it has none (config_invalid).
//
// Each checkout ends in exactly one fact, config_read or config_invalid,
// appended only right after the change's checked_out (ExpectLast), and
// each jobset is created only as new (ExpectLast(0)): a checkout
// redelivered at any later time, duplicate window or not, decides nothing
// twice. The refusal's text is made valid UTF-8 and bounded, so it can
// always be appended; a checkout the reader gives up on (its worktree
// unreadable, say) is recorded as config_invalid with the error.
package reader

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/reader/internal/ciconfig"
)

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	// Metrics, when set, counts checkouts given up (ekaci_messages_given_up_total).
	Metrics *telemetry.Metrics
	// Backoff is the first retry delay (default 200 ms), MaxDeliver the
	// tries before the configuration is recorded invalid (default 5).
	Backoff    time.Duration
	MaxDeliver int
}

// maxErrorBytes bounds a refusal's message in a fact.
const maxErrorBytes = 4 << 10

const concurrency = 2

// Run reads configurations until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 5
	}
	handle := func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		co := rec.Event.GetChangeCheckedOut()
		if co == nil {
			return nil
		}
		return read(ctx, cfg, rec, co)
	}
	giveUp := func(ctx context.Context, m jetstream.Msg, cause error) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return fmt.Errorf("no change to refuse: %w", err)
		}
		if rec.Event.GetChangeCheckedOut() == nil {
			return nil
		}
		return record(ctx, cfg, rec, invalid(rec.ID, fmt.Sprintf("could not read %s: %v", ciconfig.FileName, cause)))
	}
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.ReaderDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Change, "checked_out")},
		AckWait: 30 * time.Second, Concurrency: concurrency, MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff,
		// One message per slot: none waits long enough to be redelivered.
		MaxAckPending: concurrency,
		GiveUp:        giveUp,
		GaveUp:        cfg.Metrics.CountGiveUp,
	}, handle, cfg.Logger)
}

func invalid(changeID, msg string) *eventsv1.Event {
	return &eventsv1.Event{Id: eventlog.ConfigInvalidID(changeID),
		Payload: &eventsv1.Event_ChangeConfigInvalid{ChangeConfigInvalid: &eventsv1.ChangeConfigInvalid{
			Error: text.Bound(msg, maxErrorBytes), Path: ciconfig.FileName}}}
}

// record appends the change's configuration fact right after its
// checked_out; a conflict means it already landed.
func record(ctx context.Context, cfg Config, rec eventlog.Record, ev *eventsv1.Event) error {
	ev.CausationId, ev.CorrelationId = rec.Event.GetId(), rec.ID
	_, err := cfg.Events.Append(ctx, rec.ID, ev, eventlog.ExpectLast(rec.Seq))
	if errors.Is(err, eventlog.ErrConflict) {
		cfg.Logger.Info().Str("change", rec.ID).Msg("configuration already recorded")
		return nil
	}
	return err
}

func read(ctx context.Context, cfg Config, rec eventlog.Record, co *eventsv1.ChangeCheckedOut) error {
	changeID := rec.ID
	_, last, err := cfg.Events.Load(ctx, eventlog.Change, changeID)
	if err != nil {
		return err
	}
	if last != rec.Seq {
		// Its configuration is recorded (or the change moved on): a
		// redelivery, nothing to decide again.
		return nil
	}
	conf, err := ciconfig.Read(co.GetHeadWorktree())
	var cerr *ciconfig.Error
	switch {
	case errors.Is(err, ciconfig.ErrNotConfigured):
		return record(ctx, cfg, rec, &eventsv1.Event{Id: eventlog.ConfigReadID(changeID),
			Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: false}}})
	case errors.As(err, &cerr):
		cfg.Logger.Warn().Str("change", changeID).Err(err).Msg("configuration refused")
		return record(ctx, cfg, rec, invalid(changeID, err.Error()))
	case err != nil:
		return err
	}
	read := &eventsv1.ChangeConfigRead{Configured: true}
	for _, job := range conf.Jobs {
		jobsetID := eventlog.JobsetID(changeID, job.Name)
		ev := &eventsv1.Event{Id: eventlog.JobsetCreatedID(jobsetID), CausationId: rec.Event.GetId(), CorrelationId: changeID,
			Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{
				ChangeId: changeID, Job: job.Name, File: job.File, Attr: job.Attr,
				AllowEvalFailures: job.AllowEvalFailures, Args: job.Args,
				HeadWorktree: co.GetHeadWorktree(), BaseWorktree: co.GetBaseWorktree(),
			}}}
		// Created once: a conflict is this jobset created by an earlier
		// try that stopped before config_read.
		if _, err := cfg.Events.Append(ctx, jobsetID, ev, eventlog.ExpectLast(0)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
		read.Jobs = append(read.Jobs, job.Name)
	}
	// A check's failure is compared with the base only when the base
	// has that check too (a new check that fails fails the change, as a
	// new attribute does). A base that cannot be read has none.
	baseChecks := map[string]bool{}
	if co.GetBaseWorktree() != "" && len(conf.Checks) > 0 {
		if base, err := ciconfig.Read(co.GetBaseWorktree()); err == nil {
			for _, c := range base.Checks {
				baseChecks[c.Name] = true
			}
		}
	}
	for _, check := range conf.Checks {
		checkID := eventlog.CheckID(changeID, check.Name)
		q := &eventsv1.CheckQueued{
			ChangeId: changeID, Name: check.Name, Command: check.Command, AllowNetwork: check.AllowNetwork,
			TimeoutSeconds: check.TimeoutSeconds, HeadWorktree: co.GetHeadWorktree(), BaseWorktree: co.GetBaseWorktree(),
			BaseHasCheck: baseChecks[check.Name],
		}
		if check.PackagesJob != "" {
			q.Packages = &eventsv1.CheckPackages{Job: check.PackagesJob, Attrs: check.PackagesAttrs}
			q.PackagesJobsetId = eventlog.JobsetID(changeID, check.PackagesJob)
		}
		ev := &eventsv1.Event{Id: eventlog.CheckQueuedID(checkID), CausationId: rec.Event.GetId(), CorrelationId: changeID,
			Payload: &eventsv1.Event_CheckQueued{CheckQueued: q}}
		// Queued once, as a jobset is created once.
		if _, err := cfg.Events.Append(ctx, checkID, ev, eventlog.ExpectLast(0)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
		read.Checks = append(read.Checks, check.Name)
	}
	return record(ctx, cfg, rec, &eventsv1.Event{Id: eventlog.ConfigReadID(changeID), Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: read}})
}
