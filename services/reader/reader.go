// Package reader reads each checked-out change's .ekaci/config.json
// strictly and turns every job into a jobset. A missing file means no CI is
// configured; a bad one is recorded with the key path that is wrong.
package reader

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/reader/internal/ciconfig"
)

// Config wires the stage.
type Config struct {
	Log    *eventlog.Log
	Logger zerolog.Logger
}

// Run reads configurations until ctx ends.
func Run(ctx context.Context, cfg Config) error {
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
	return worker.Run(ctx, cfg.Log.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: "reader",
		Filters: []string{eventlog.FactFilter(eventlog.Change, "checked_out")},
		AckWait: 30 * time.Second, Concurrency: 2, MaxDeliver: 5,
	}, handle, cfg.Logger)
}

func read(ctx context.Context, cfg Config, rec eventlog.Record, co *eventsv1.ChangeCheckedOut) error {
	changeID := rec.ID
	emit := func(id string, ev *eventsv1.Event) error {
		ev.CausationId, ev.CorrelationId = rec.Event.GetId(), changeID
		_, err := cfg.Log.Append(ctx, id, ev)
		return err
	}
	conf, err := ciconfig.Read(co.GetHeadWorktree())
	var cerr *ciconfig.Error
	switch {
	case errors.Is(err, ciconfig.ErrNotConfigured):
		return emit(changeID, &eventsv1.Event{Id: "config-read-" + changeID,
			Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: false}}})
	case errors.As(err, &cerr):
		cfg.Logger.Warn().Str("change", changeID).Err(err).Msg("configuration refused")
		return emit(changeID, &eventsv1.Event{Id: "config-invalid-" + changeID,
			Payload: &eventsv1.Event_ChangeConfigInvalid{ChangeConfigInvalid: &eventsv1.ChangeConfigInvalid{Error: err.Error(), Path: ".ekaci/config.json"}}})
	case err != nil:
		return err
	}
	read := &eventsv1.ChangeConfigRead{Configured: true}
	for _, job := range conf.Jobs {
		jobsetID := eventlog.JobsetID(changeID, job.Name)
		ev := &eventsv1.Event{Id: "created-" + jobsetID, Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{
			ChangeId: changeID, Job: job.Name, File: job.File, Attr: job.Attr,
			AllowEvalFailures: job.AllowEvalFailures, Args: job.Args,
			HeadWorktree: co.GetHeadWorktree(), BaseWorktree: co.GetBaseWorktree(),
		}}}
		if err := emit(jobsetID, ev); err != nil {
			return err
		}
		read.Jobs = append(read.Jobs, job.Name)
	}
	for _, c := range conf.Checks {
		read.Checks = append(read.Checks, c.Name)
	}
	return emit(changeID, &eventsv1.Event{Id: "config-read-" + changeID, Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: read}})
}
