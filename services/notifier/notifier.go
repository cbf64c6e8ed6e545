// Package notifier tells people how a change ended: a conclusion line
// per jobset and change (the line `ekaci run` and the logs show). GitHub
// check runs are its package checkrun, run beside it by ekaci-notifier
// and the all-in-one when a GitHub App is configured.
//
// It decides nothing: it reports the recorder's conclusions.
package notifier

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Sink receives conclusions.
type Sink interface {
	JobsetConcluded(ctx context.Context, jobsetID string, c *eventsv1.JobsetConcluded) error
	ChangeConcluded(ctx context.Context, changeID string, c *eventsv1.ChangeConcluded) error
}

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Logger zerolog.Logger
	Sink   Sink
}

// Run notifies until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	handle := func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		switch p := rec.Event.GetPayload().(type) {
		case *eventsv1.Event_JobsetConcluded:
			return cfg.Sink.JobsetConcluded(ctx, rec.ID, p.JobsetConcluded)
		case *eventsv1.Event_ChangeConcluded:
			return cfg.Sink.ChangeConcluded(ctx, rec.ID, p.ChangeConcluded)
		}
		return nil
	}
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.NotifierDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Jobset, "concluded"), eventlog.FactFilter(eventlog.Change, "concluded")},
	}, handle, cfg.Logger)
}

// Local writes one line per conclusion.
type Local struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLocal returns a sink writing to w.
func NewLocal(w io.Writer) *Local { return &Local{w: w} }

// ConclusionName is a conclusion as a word.
func ConclusionName(c eventsv1.Conclusion) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "CONCLUSION_"))
}

// JobsetConcluded implements Sink.
func (l *Local) JobsetConcluded(_ context.Context, id string, c *eventsv1.JobsetConcluded) error {
	counts := map[string]int{}
	for state, n := range c.GetCounts() {
		counts[state] = int(n)
	}
	if len(counts) == 0 { // a conclusion without counts lists every result
		for _, r := range c.GetResults() {
			counts[r.GetState()]++
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := fmt.Fprintf(l.w, "jobset %s (%s): %s %v\n", c.GetJob(), id, ConclusionName(c.GetConclusion()), counts)
	return err
}

// ChangeConcluded implements Sink.
func (l *Local) ChangeConcluded(_ context.Context, id string, c *eventsv1.ChangeConcluded) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := fmt.Fprintf(l.w, "change %s: %s — %s\n", id, ConclusionName(c.GetConclusion()), c.GetSummary())
	return err
}
