package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	filter := AggregateFilter(aggregate, id)
	for try := 1; ; try++ {
		recs, last, err := l.load(ctx, filter)
		if err != nil {
			return nil, 0, err
		}
		// On a replicated stream the read's consumer may sit on a replica
		// that has not applied the latest appends yet (JetStream places a
		// reader's consumer on any peer): a history that ends before the
		// leader's last event on these subjects is stale, and a decision
		// made from it (a request dropped as stale, an action refused)
		// would be wrong. The leader is asked, and the read made again
		// until the replica has caught up.
		behind, err := l.leaderAhead(ctx, filter, last)
		if err != nil || behind == 0 {
			return recs, last, err
		}
		if try >= staleReadTries {
			return nil, 0, fmt.Errorf("load %s: the replica read stayed at %d behind the leader's %d after %d reads", filter, last, behind, try)
		}
		t := time.NewTimer(time.Duration(try) * 20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, 0, ctx.Err()
		}
	}
}

// leaderTimeout bounds a question to the stream's leader, as nats.go's
// JetStream API calls are bounded by default.
const leaderTimeout = 5 * time.Second

// staleReadTries bounds Load's reads of a replica behind the leader
// (20 ms, 40 ms, ... apart: about 15 s in all).
const staleReadTries = 38

func (l *Log) load(ctx context.Context, filter string) ([]Record, uint64, error) {
	var recs []Record
	err := l.Read(ctx, 0, []string{filter}, func(r Record) error {
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

// leaderAhead returns the sequence of the last event on filter as the
// stream's leader has it when that is after last, and 0 when it is not
// (or the stream has one replica, which is its leader). Only the leader
// answers the JetStream API's (not direct) message get.
func (l *Log) leaderAhead(ctx context.Context, filter string, last uint64) (uint64, error) {
	replicated, err := l.replicated(ctx)
	if err != nil || !replicated {
		return 0, err
	}
	prefix := l.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	req, err := json.Marshal(map[string]string{"last_by_subj": filter})
	if err != nil {
		return 0, err
	}
	// Only the leader answers: while there is none (an election, a
	// partition) nobody does, and the request waits out its timeout,
	// which the caller's context may not have.
	rctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	msg, err := l.js.Conn().RequestWithContext(rctx, prefix+"STREAM.MSG.GET."+EventsStream, req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v: %w", leaderTimeout, err)
		}
		return 0, fmt.Errorf("ask the leader of %s for the last of %s: %w", EventsStream, filter, err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("the leader of %s on %s: %w", EventsStream, filter, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return 0, nil // nothing on these subjects yet
	case resp.Error != nil:
		return 0, fmt.Errorf("the leader of %s on %s: %s", EventsStream, filter, resp.Error.Description)
	case resp.Message == nil:
		return 0, fmt.Errorf("the leader of %s on %s: an answer without a message", EventsStream, filter)
	case resp.Message.Seq > last:
		return resp.Message.Seq, nil
	}
	return 0, nil
}

// replicated reports whether the event stream has more than one replica
// (asked once; a stream's replicas change only by an operator's hand, and
// a stream made replicated later is seen at the next start).
func (l *Log) replicated(ctx context.Context) (bool, error) {
	switch l.replicas.Load() {
	case 1:
		return false, nil
	case 2:
		return true, nil
	}
	s, err := l.js.Stream(ctx, EventsStream)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", EventsStream, err)
	}
	r := s.CachedInfo().Config.Replicas > 1
	if r {
		l.replicas.Store(2)
	} else {
		l.replicas.Store(1)
	}
	return r, nil
}
