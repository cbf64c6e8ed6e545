package projection

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// item is one event on its way to a fold: decoded, or the reason it could
// not be (seq still set, so the position moves past it). at says which
// event of the log it is, for the checkpoint.
type item struct {
	rec     eventlog.Record
	subject string
	seq     uint64
	at      mark
	err     error
}

func decodeItem(m jetstream.Msg) item {
	id := m.Headers().Get(jetstream.MsgIDHeader)
	rec, err := eventlog.DecodeFacts(m)
	if err != nil {
		it := item{subject: m.Subject(), err: err}
		if md, merr := m.Metadata(); merr == nil {
			it.seq = md.Sequence.Stream
			it.at = mark{seq: it.seq, stored: md.Timestamp.UnixNano(), id: id}
		}
		return it
	}
	return item{rec: rec, subject: rec.Subject, seq: rec.Seq, at: mark{seq: rec.Seq, stored: rec.Time.UnixNano(), id: id}}
}

// events delivers the model's events, decoded, from its feed or from a
// consumer of its own; errc reports the source's end while ctx is not done.
func (r *Runner) events(ctx context.Context) (<-chan item, <-chan error, func(), error) {
	errc := make(chan error, 1)
	if r.feed != nil {
		items, done, err := r.feed.join(ctx, r.h.Name(), r.h.Filters(), r.Position(), r.batch)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read model %s: %w", r.h.Name(), err)
		}
		go func() {
			select {
			case <-done:
				errc <- r.feed.Err()
			case <-ctx.Done(): // Run returns on its own
			}
		}()
		return items, errc, func() {}, nil
	}
	stream, err := r.log.JetStream().Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read model %s: stream: %w", r.h.Name(), err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.h.Filters()}
	if pos := r.Position(); pos > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = pos + 1
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read model %s: consumer: %w", r.h.Name(), err)
	}
	// Consume, not Messages: its iterator arms a heartbeat timer on every
	// Next, one per event.
	msgs := make(chan item, r.batch)
	quit := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- decodeItem(m):
		case <-quit: // stopped: the rest is folded on the next start
		}
	}, jetstream.PullMaxMessages(r.batch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself after a gap or missed
		// heartbeats; what reaches here is worth a line, not a stop.
		r.logger.Warn().Err(err).Str("model", r.h.Name()).Msg("event consumer")
	}))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read model %s: consume: %w", r.h.Name(), err)
	}
	go func() {
		<-cc.Closed()
		select {
		case errc <- fmt.Errorf("event consumer stopped"):
		default:
		}
	}()
	return msgs, errc, func() {
		close(quit)
		cc.Stop()
	}, nil
}
