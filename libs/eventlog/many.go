package eventlog

import (
	"cmp"
	"context"
	"fmt"
	"time"

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
// a failure of the whole call (the context, a lost connection, no ack
// within the log's ack timeout: ErrAckTimeout), and then errs[i] is set
// too for every item not known to be appended, so a caller can retry
// exactly those (see Transient).
func (l *Log) AppendMany(ctx context.Context, items []Item) (appended []Appended, errs []error, err error) {
	appended = make([]Appended, len(items))
	errs = make([]error, len(items))
	aggs, facts := make([]string, len(items)), make([]string, len(items))
	err = pipeline(ctx, l.js, len(items), l.ackTimeout, func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
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
// events, waiting at most DefaultAckTimeout for acknowledgements; errs[i]
// is item i's own failure, err a failure of the whole call (and then
// errs[i] is set for every item not known to be published).
func PublishMany(ctx context.Context, js jetstream.JetStream, items []Work) (errs []error, err error) {
	errs = make([]error, len(items))
	err = pipeline(ctx, js, len(items), DefaultAckTimeout, func(i int) (*nats.Msg, []jetstream.PublishOpt, error) {
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
// manyWindow in flight, and reports each one's outcome to done exactly
// once: the subject ("" when msg failed or it was never published), the
// ack or the error. Acknowledgements are awaited half a window at a time,
// each half within timeout (one timer for the call, re-armed per half: no
// cost per message); a failure of the whole call is returned after every
// item not yet reported is reported with it.
func pipeline(ctx context.Context, js jetstream.JetStream, n int, timeout time.Duration,
	msg func(i int) (*nats.Msg, []jetstream.PublishOpt, error),
	done func(i int, subject string, ack *jetstream.PubAck, err error)) error {
	type inflight struct {
		i       int
		fut     jetstream.PubAckFuture
		subject string
	}
	if timeout <= 0 {
		timeout = DefaultAckTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	// wait reports fs's outcomes; on a failure of the whole call it
	// reports the rest of fs with it.
	wait := func(fs []inflight) error {
		timer.Reset(timeout)
		for k, f := range fs {
			var err error
			select {
			case ack := <-f.fut.Ok():
				done(f.i, f.subject, ack, nil)
				continue
			case perr := <-f.fut.Err():
				done(f.i, f.subject, nil, perr)
				continue
			case <-ctx.Done():
				err = ctx.Err()
			case <-timer.C:
				err = fmt.Errorf("%w (%v)", ErrAckTimeout, timeout)
			}
			for _, f := range fs[k:] {
				done(f.i, f.subject, nil, err)
			}
			return err
		}
		return nil
	}
	// drain waits for what is in flight, half a window at a time.
	drain := func(window []inflight) error {
		for len(window) > 0 {
			k := min(len(window), manyWindow/2)
			if err := wait(window[:k]); err != nil {
				for _, f := range window[k:] {
					done(f.i, f.subject, nil, err)
				}
				return err
			}
			window = window[k:]
		}
		return nil
	}
	// unsent reports items from..n-1, never published, as failed by err.
	unsent := func(from int, err error) error {
		for j := from; j < n; j++ {
			done(j, "", nil, err)
		}
		return err
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
			err := fmt.Errorf("publish %s: %w", m.Subject, perr)
			// What is in flight may still be acknowledged: wait for it, so
			// that only what truly failed is reported so.
			derr := drain(window)
			return unsent(i, cmp.Or(derr, err))
		}
		window = append(window, inflight{i: i, fut: fut, subject: m.Subject})
		if len(window) >= manyWindow {
			if err := wait(window[:manyWindow/2]); err != nil {
				for _, f := range window[manyWindow/2:] {
					done(f.i, f.subject, nil, err)
				}
				return unsent(i+1, err)
			}
			window = append(window[:0], window[manyWindow/2:]...)
		}
	}
	return drain(window)
}
