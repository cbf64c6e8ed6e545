package builder

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
)

// drains follows the builder_drained and builder_resumed facts of this
// builder's name (folded with action.Builder, as the admin API decides
// them): while drained, the pools take no new request and the builds
// running go on to their end.
type drains struct {
	mu      sync.Mutex
	state   action.Builder
	changed chan struct{} // closed and replaced at each change
	notify  func(drained bool)
	log     zerolog.Logger
}

// followDrains reads the name's drain facts so far, then follows new ones
// until ctx ends (stop waits for that). notify is told each change.
func followDrains(ctx context.Context, log *eventlog.Log, name string, notify func(bool), logger zerolog.Logger) (*drains, func(), error) {
	b, last, err := action.LoadBuilder(ctx, log, name)
	if err != nil {
		return nil, nil, err
	}
	d := &drains{state: b, changed: make(chan struct{}), notify: notify, log: logger}
	if b.Drained {
		logger.Warn().Str("drained_by", b.Actor.GetWho()).Str("reason", b.Actor.GetReason()).Msg("this builder is drained: it takes no work until resumed")
	}
	stream, err := log.JetStream().Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return nil, nil, fmt.Errorf("follow drains of %s: %w", name, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventlog.AggregateFilter(eventlog.Builder, eventlog.BuilderID(name))},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: last + 1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("follow drains of %s: %w", name, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		rec, err := eventlog.DecodeFacts(m)
		if err != nil {
			logger.Error().Err(err).Str("subject", m.Subject()).Msg("undecodable drain fact; ignored")
			return
		}
		d.apply(rec)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("follow drains of %s: %w", name, err)
	}
	return d, cc.Stop, nil
}

func (d *drains) apply(rec eventlog.Record) {
	d.mu.Lock()
	was := d.state.Drained
	d.state.Apply(rec)
	now := d.state.Drained
	if was != now {
		close(d.changed)
		d.changed = make(chan struct{})
	}
	d.mu.Unlock()
	if was == now {
		return
	}
	ev := d.log.Info()
	if now {
		ev = d.log.Warn()
	}
	ev.Bool("drained", now).Str("by", d.state.Actor.GetWho()).Str("reason", d.state.Actor.GetReason()).Msg("drain state changed")
	if d.notify != nil {
		d.notify(now)
	}
}

// open waits until the builder is not drained, then returns a context
// that ends when it is drained again (or ctx ends). ok is false when ctx
// ended first.
func (d *drains) open(ctx context.Context) (take context.Context, stop func(), ok bool) {
	for {
		d.mu.Lock()
		drained, changed := d.state.Drained, d.changed
		d.mu.Unlock()
		if !drained {
			take, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-changed:
				case <-take.Done():
				}
				cancel()
			}()
			return take, cancel, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil, false
		}
	}
}

func (d *drains) drained() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state.Drained
}
