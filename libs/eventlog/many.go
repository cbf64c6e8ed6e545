package eventlog

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

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
	type inflight struct {
		i      int
		fut    jetstream.PubAckFuture
		agg    string
		fact   string
		sbject string
	}
	wait := func(f inflight) error {
		select {
		case ack := <-f.fut.Ok():
			appended[f.i] = Appended{Seq: ack.Sequence, Subject: f.sbject, Duplicate: ack.Duplicate}
			if !ack.Duplicate && l.appended != nil {
				l.appended(f.agg, f.fact)
			}
		case perr := <-f.fut.Err():
			if isConflict(perr) {
				errs[f.i] = fmt.Errorf("append %s: %w", f.sbject, ErrConflict)
			} else {
				errs[f.i] = fmt.Errorf("append %s: %w", f.sbject, perr)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	var window []inflight
	for i, it := range items {
		msg, agg, fact, merr := l.message(it.ID, it.Event)
		if merr != nil {
			errs[i] = merr
			continue
		}
		var opts []jetstream.PublishOpt
		if it.Expect {
			opts = append(opts, jetstream.WithExpectLastSequenceForSubject(it.ExpectSeq, AggregateFilter(agg, it.ID)))
		}
		fut, perr := l.js.PublishMsgAsync(msg, opts...)
		if perr != nil {
			return appended, errs, fmt.Errorf("append %s: %w", msg.Subject, perr)
		}
		window = append(window, inflight{i: i, fut: fut, agg: agg, fact: fact, sbject: msg.Subject})
		if len(window) >= manyWindow {
			for _, f := range window[:manyWindow/2] {
				if err := wait(f); err != nil {
					return appended, errs, err
				}
			}
			window = append(window[:0], window[manyWindow/2:]...)
		}
	}
	for _, f := range window {
		if err := wait(f); err != nil {
			return appended, errs, err
		}
	}
	return appended, errs, nil
}
