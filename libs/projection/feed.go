package projection

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// Feed is one ordered consumer of the event log shared by the read models
// of one process (the all-in-one runs ingress and the recorder side by
// side): each event is delivered and decoded once, and every runner on the
// feed folds those that match its filters, with its own position,
// transaction and checkpoints. Without a feed each runner has a consumer
// of its own, as a stage running on its own does.
//
// The feed starts once every read model named in NewFeed has joined, from
// the earliest of their positions, and serves one run of each: it stops
// with the context of the last one to join. The decoded events are
// shared, so handlers on a feed must not change them.
type Feed struct {
	log    *eventlog.Log
	logger zerolog.Logger
	want   []string

	mu      sync.Mutex
	joined  map[string]*feedSub
	started bool
	done    chan struct{} // closed when the feed stops
	err     error
}

type feedSub struct {
	filters []string
	pos     uint64
	items   chan item
}

// NewFeed returns a feed for the read models with the given names.
func NewFeed(log *eventlog.Log, logger zerolog.Logger, names ...string) *Feed {
	return &Feed{log: log, logger: logger, want: names, joined: map[string]*feedSub{}, done: make(chan struct{})}
}

// WithFeed makes the runner read its events from f.
func WithFeed(f *Feed) Option { return func(r *Runner) { r.feed = f } }

// join registers a read model at position pos and, once all have joined,
// starts the consumer; it returns the model's events and the feed's end.
func (f *Feed) join(ctx context.Context, name string, filters []string, pos uint64, buffer int) (<-chan item, <-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.want, name) {
		return nil, nil, fmt.Errorf("read model %s is not one of this feed's (%v)", name, f.want)
	}
	if _, ok := f.joined[name]; ok || f.started {
		return nil, nil, fmt.Errorf("read model %s joined its feed twice", name)
	}
	s := &feedSub{filters: filters, pos: pos, items: make(chan item, buffer)}
	f.joined[name] = s
	if len(f.joined) == len(f.want) {
		f.started = true
		if err := f.start(ctx, buffer); err != nil {
			return nil, nil, err
		}
	}
	return s.items, f.done, nil
}

// start opens the shared consumer; f.mu is held.
func (f *Feed) start(ctx context.Context, buffer int) error {
	subs := make([]*feedSub, 0, len(f.joined))
	var filters []string
	from := uint64(0)
	for i, name := range f.want {
		s := f.joined[name]
		subs = append(subs, s)
		if i == 0 || s.pos < from {
			from = s.pos
		}
		filters = append(filters, s.filters...)
	}
	slices.Sort(filters)
	filters = slices.Compact(filters)
	stream, err := f.log.JetStream().Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return fmt.Errorf("event feed: stream: %w", err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: consumerFilters(filters)}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("event feed: consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		it := decodeItem(m)
		for _, s := range subs {
			if it.seq <= s.pos || !matchesAny(s.filters, it.subject) {
				continue
			}
			select {
			case s.items <- it:
			case <-f.done:
				return
			}
		}
	}, jetstream.PullMaxMessages(buffer), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		f.logger.Warn().Err(err).Msg("event feed")
	}))
	if err != nil {
		return fmt.Errorf("event feed: consume: %w", err)
	}
	go func() {
		select {
		case <-cc.Closed():
			f.stop(fmt.Errorf("event feed stopped"))
		case <-ctx.Done():
			f.stop(ctx.Err())
			cc.Stop()
		}
	}()
	return nil
}

func (f *Feed) stop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
	default:
		f.err = err
		close(f.done)
	}
}

// Err is why the feed stopped.
func (f *Feed) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// consumerFilters is what the feed's consumer asks the server for, given
// the models' filters: nil, the whole stream, when they want whole
// aggregates (ingress and the recorder: every drv, jobset and change fact)
// or overlap (which the server refuses); else the filters. A consumer with
// filters costs the server a walk of the stream's per-subject index — one
// subject per fact ever appended, ~600,000 after ten 100,000-derivation
// changes, ~0.2 s of CPU — each time it is created (every start, and each
// time the ordered consumer recreates itself after a gap), and a match of
// several filters per message; reading the whole stream costs neither,
// and the few events no model wants are passed over by matchesAny.
func consumerFilters(filters []string) []string {
	if overlapping(filters) {
		return nil
	}
	for _, f := range filters {
		if f == eventlog.EventsRoot+".>" {
			return nil
		}
		agg, ok := strings.CutPrefix(f, eventlog.EventsRoot+".")
		if agg, ok = strings.CutSuffix(agg, ".>"); !ok || !eventlog.ValidToken(agg) {
			return filters
		}
	}
	return nil
}

// overlapping reports whether one filter matches subjects another does.
func overlapping(filters []string) bool {
	for i, a := range filters {
		for _, b := range filters[i+1:] {
			if subjectsIntersect(a, b) {
				return true
			}
		}
	}
	return false
}

// subjectsIntersect reports whether some subject matches both filters.
func subjectsIntersect(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}

func matchesAny(filters []string, subject string) bool {
	for _, f := range filters {
		if matches(f, subject) {
			return true
		}
	}
	return false
}

// matches reports whether a literal subject matches a filter with NATS
// wildcards (* one token, > the rest).
func matches(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		}
		if !fmore || !smore {
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
