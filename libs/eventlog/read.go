package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastSeq returns the event log's last stream sequence (0 when empty).
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	s, err := l.js.Stream(ctx, EventsStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", EventsStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", EventsStream, err)
	}
	return info.State.LastSeq, nil
}

// Read calls fn for every event after sequence from that matches filters
// (all events when none), in stream order, up to the log's end at the time
// of the call, then returns. A batched fact comes with its transitions:
// fn gets the fact, then each transition it records (Record.Transitions).
func (l *Log) Read(ctx context.Context, from uint64, filters []string, fn func(Record) error) error {
	s, err := l.js.Stream(ctx, EventsStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", EventsStream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	// In a cluster the JetStream API can be briefly without a responder
	// (a leader moving); that is worth a few short retries, not a failure.
	for try := 0; err != nil && errors.Is(err, nats.ErrNoResponders) && try < 20 && ctx.Err() == nil; try++ {
		time.Sleep(100 * time.Millisecond)
		cons, err = s.OrderedConsumer(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("read %v from %d: %w", filters, from, err)
	}
	defer func() { _ = s.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	// Ask for no more than remains: a Fetch of a final partial batch would
	// otherwise wait out its whole max-wait.
	remaining := cons.CachedInfo().NumPending
	// In a cluster a just-created consumer may not answer its first pulls
	// yet: retry those briefly, as the creation above does.
	unanswered := 0
	retry := func(err error) bool {
		if !errors.Is(err, nats.ErrNoResponders) || unanswered >= 20 || ctx.Err() != nil {
			return false
		}
		unanswered++
		time.Sleep(100 * time.Millisecond)
		return true
	}
	for remaining > 0 {
		batch, err := cons.Fetch(int(min(remaining, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil && retry(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %v: %w", filters, err)
		}
		n := 0
		var last jetstream.Msg
		for m := range batch.Messages() {
			n++
			last = m
			rec, err := DecodeFacts(m)
			if err != nil {
				return err
			}
			for t := range rec.Transitions() {
				if err := fn(t); err != nil {
					return err
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			if n == 0 && retry(err) {
				continue
			}
			return fmt.Errorf("read %v: %w", filters, err)
		}
		if last != nil {
			md, err := last.Metadata()
			if err != nil {
				return err
			}
			remaining = md.NumPending
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Load returns one aggregate's history and the sequence of its last event
// (0 when it has none) — what a decider needs for ExpectLast. The history
// is the facts on the aggregate's own subjects: a batched fact on it is
// returned as itself, and the transitions it records for others are not
// (nor are the ones others' batched facts record for it: see
// Record.Transitions).
func (l *Log) Load(ctx context.Context, aggregate, id string) ([]Record, uint64, error) {
	var recs []Record
	err := l.Read(ctx, 0, []string{AggregateFilter(aggregate, id)}, func(r Record) error {
		if r.RecordedOn == "" {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var last uint64
	if len(recs) > 0 {
		last = recs[len(recs)-1].Seq
	}
	return recs, last, nil
}
