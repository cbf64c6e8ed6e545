package eventlog

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Item is one event of AppendMany.
type Item struct {
	ID        string // aggregate id
	Event     *eventsv1.Event
	Expect    bool   // guard with ExpectSeq, as ExpectLast does
	ExpectSeq uint64 // the aggregate's last sequence (0: must be new)
}

// manyWindow bounds the appends in flight: enough to keep the server busy,
// few enough to stay under the publisher's pending limit.
const manyWindow = 1024

// AppendMany appends items pipelined: up to manyWindow are on the wire
// before the first acknowledgement is awaited, instead of one round trip
// each. They land in slice order (one connection publishes in order).
// errs[i] is item i's own failure (ErrConflict for a failed guard); err is
// a failure of the whole call.
func (l *Log) AppendMany(ctx context.Context, items []Item) (appended []Appended, errs []error, err error) {
	appended = make([]Appended, len(items))
	errs = make([]error, len(items))
	aggs, facts := make([]string, len(items)), make([]string, len(items))
	err = pipeline(ctx, l.js, len(items), func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
		it := items[i]
		msg, agg, fact, err := l.message(it.ID, it.Event)
		if err != nil {
			return nil, nil, err
		}
		aggs[i], facts[i] = agg, fact
		var opts []jetstream.PublishOpt
		if it.Expect {
			opts = append(opts, jetstream.WithExpectLastSequenceForSubject(it.ExpectSeq, AggregateFilter(agg, it.ID)))
		}
		return msg, opts, nil
	}, func(i int, subject string, ack *jetstream.PubAck, err error) {
		switch {
		case err == nil:
			appended[i] = Appended{Seq: ack.Sequence, Subject: subject, Duplicate: ack.Duplicate}
			if !ack.Duplicate && l.appended != nil {
				l.appended(aggs[i], facts[i])
			}
		case isConflict(err):
			errs[i] = fmt.Errorf("append %s: %w", subject, ErrConflict)
		case subject != "":
			errs[i] = fmt.Errorf("append %s: %w", subject, err)
		default:
			errs[i] = err
		}
	})
	return appended, errs, err
}

// Work is one work item of PublishMany, as Publish takes it.
type Work struct {
	Subject, MsgID string
	Message        proto.Message
}

// PublishMany publishes work items pipelined, as AppendMany appends
// events; errs[i] is item i's own failure, err a failure of the whole call.
func PublishMany(ctx context.Context, js jetstream.JetStream, items []Work) (errs []error, err error) {
	errs = make([]error, len(items))
	err = pipeline(ctx, js, len(items), func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
		msg, err := workMessage(items[i].Subject, items[i].MsgID, items[i].Message)
		return msg, nil, err
	}, func(i int, subject string, _ *jetstream.PubAck, err error) {
		if err != nil && subject != "" {
			err = fmt.Errorf("publish %s: %w", subject, err)
		}
		errs[i] = err
	})
	return errs, err
}

// pipeline publishes n messages made by msg asynchronously, up to
// manyWindow in flight, and reports each one's outcome to done, in order:
// the subject ("" when msg failed), the ack or the error.
func pipeline(ctx context.Context, js jetstream.JetStream, n int,
	msg func(i int) (*nats.Msg, []jetstream.PublishOpt, error),
	done func(i int, subject string, ack *jetstream.PubAck, err error)) error {
	type inflight struct {
		i       int
		fut     jetstream.PubAckFuture
		subject string
	}
	wait := func(f inflight) error {
		select {
		case ack := <-f.fut.Ok():
			done(f.i, f.subject, ack, nil)
		case perr := <-f.fut.Err():
			done(f.i, f.subject, nil, perr)
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	var window []inflight
	for i := range n {
		m, opts, merr := msg(i)
		if merr != nil {
			done(i, "", nil, merr)
			continue
		}
		fut, perr := js.PublishMsgAsync(m, opts...)
		if perr != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, perr)
		}
		window = append(window, inflight{i: i, fut: fut, subject: m.Subject})
		if len(window) >= manyWindow {
			for _, f := range window[:manyWindow/2] {
				if err := wait(f); err != nil {
					return err
				}
			}
			window = append(window[:0], window[manyWindow/2:]...)
		}
	}
	for _, f := range window {
		if err := wait(f); err != nil {
			return err
		}
	}
	return nil
}
