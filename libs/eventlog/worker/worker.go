// Package worker runs a stage's handler over a durable JetStream pull
// consumer: bounded concurrency, explicit acks, heartbeats for long work,
// retries with back-off, and a graceful drain when its context ends.
//
// Handlers must be idempotent: a message is redelivered when its handler
// fails, when the process dies mid-work, or when an ack is lost.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrPermanent marks a handler error that no retry can fix: the message is
// terminated instead of redelivered.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err so the worker terminates the message.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// RetryAfter wraps why a handler wants its message handed back after d
// (and not before): not a failure but a wait whose end the handler knows,
// such as another process's lease. The worker puts the message back with
// that delay, without the back-off or a warning. The redelivery is a
// delivery like any other (the server counts them), so MaxDeliver still
// bounds how often a message can be put back: use it for waits that end.
func RetryAfter(d time.Duration, err error) error { return &retryAfterError{after: d, err: err} }

type retryAfterError struct {
	after time.Duration
	err   error
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("retry after %v: %v", e.after, e.err)
}

func (e *retryAfterError) Unwrap() error { return e.err }

// Handler does one message's work.
type Handler func(ctx context.Context, m jetstream.Msg) error

// Config describes the durable consumer.
type Config struct {
	// Stream is the stream the consumer reads.
	Stream string
	// Durable names the consumer, and is its identity on the server: its
	// position and its unacknowledged messages. Stages take it from
	// eventlog (durable.go), the one place each is spelled: renaming one
	// on the event log replays the whole stream to the stage, and on the
	// work queue orphans the old consumer's pending work.
	Durable string
	// Filters are the subjects the consumer takes (nil: the whole stream).
	Filters []string
	// AckWait is how long the server waits for an ack or heartbeat before
	// redelivering; a running handler sends heartbeats every AckWait/3.
	AckWait time.Duration
	// MaxDeliver bounds deliveries; after it the message is given up
	// (GiveUp, then terminated), never retried forever. The worker counts
	// them itself, not the server: a server-side bound drops a message
	// silently after a crash loop, and cuts off a message whose last
	// delivery was interrupted by a shutdown. A stop gets the message one
	// more delivery; one delivered more than MaxDeliver+1 times (handlings
	// ended by crashes or stops) is given up on receipt, without running
	// the handler again.
	MaxDeliver int
	// Concurrency is how many handlers run at once.
	Concurrency int
	// Backoff is the first redelivery delay; it doubles per delivery up
	// to 30 s.
	Backoff time.Duration
	// Batch is, for RunBatch, the most messages handed over at once.
	Batch int
	// MaxAckPending bounds the messages delivered and not yet settled;
	// 0 means Concurrency*4.
	MaxAckPending int
	// GiveUp, when set, is called before a message is terminated (refused
	// as permanent, or failed on its last delivery) so the stage can record
	// a terminal fact for the message's aggregate (an interruption, an
	// evaluation or checkout failure): no change may wait forever on a
	// message nobody will handle again. It is retried a few times; its
	// error is logged.
	GiveUp GiveUpFunc
	// GaveUp, when set, counts each terminated message; recorded says
	// whether GiveUp recorded its terminal fact (see
	// telemetry.Metrics.GaveUp).
	GaveUp func(consumer string, recorded bool)
}

// GiveUpFunc records what becomes of a message the worker stops handling;
// cause is the handler's last error.
type GiveUpFunc func(ctx context.Context, m jetstream.Msg, cause error) error

// giveUpAttempts bounds the calls of GiveUp for one message.
const giveUpAttempts = 3

func (c Config) withDefaults() Config {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Backoff <= 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.Batch <= 0 {
		c.Batch = 256
	}
	return c
}

// Ensure creates or updates the durable consumer and returns it.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	cfg = cfg.withDefaults()
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		Description:    "ekaci " + cfg.Durable,
		FilterSubjects: cfg.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     -1, // bounded by the worker (see Config.MaxDeliver)
		// A bounded number of unacknowledged messages per handler slot,
		// so a stuck stage shows as lag rather than silently stalling.
		MaxAckPending: cmp.Or(cfg.MaxAckPending, cfg.Concurrency*4),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(cfg.Filters) == 1 {
		cc.FilterSubject, cc.FilterSubjects = cfg.Filters[0], nil
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return cons, nil
}

// messages ensures the consumer and opens its message iterator, pulling up
// to pull at a time. Both are nil when ctx ended meanwhile.
func messages(ctx context.Context, js jetstream.JetStream, cfg Config, pull int) (jetstream.MessagesContext, error) {
	cons, err := Ensure(ctx, js, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return it, nil
}

// Run consumes until ctx ends, then stops taking messages, waits for the
// running handlers (whose context is cancelled too) and returns nil.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, h Handler, log zerolog.Logger) error {
	return RunWhile(ctx, ctx, js, cfg, h, log)
}

// RunWhile consumes while take lasts (take must end when ctx does: derive
// it from ctx). When take ends it stops taking messages, hands back those
// delivered and not yet handled, waits for the running handlers, which
// keep ctx and go on to their end, and returns nil: a drain of this
// process's share of the consumer, which other processes on the same
// durable go on serving.
func RunWhile(ctx, take context.Context, js jetstream.JetStream, cfg Config, h Handler, log zerolog.Logger) error {
	cfg = cfg.withDefaults()
	it, err := messages(take, js, cfg, cfg.Concurrency)
	if it == nil {
		return err // nil when stopped while starting
	}
	log = log.With().Str("consumer", cfg.Durable).Logger()
	stop := context.AfterFunc(take, it.Drain)
	defer stop()

	slots := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || take.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The server's idle heartbeats did not come (in a cluster: a
				// consumer leader moving, a node slow to answer). The
				// iterator stays usable and pulls again; stopping the stage
				// here would stall every change behind it.
				log.Warn().Err(err).Msg("consumer heartbeats missed; pulling again")
				continue
			}
			return fmt.Errorf("consumer %s: %w", cfg.Durable, err)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			handle(ctx, take, cfg, h, m, log)
		}()
	}
}

func handle(ctx, take context.Context, cfg Config, h Handler, m jetstream.Msg, log zerolog.Logger) {
	if handBack(take, cfg, m) || overDelivered(ctx, cfg, m, log) {
		return
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := beatWhile(cfg, m)
	err := h(hctx, m)
	stop()
	cancel()
	settle(ctx, cfg, m, err, log)
}

// beatWhile sends heartbeats for msgs every AckWait/3 until the returned
// stop is called: from one timer that re-arms itself, not a goroutine and
// a ticker per message, since most handlers finish long before the first.
func beatWhile(cfg Config, msgs ...jetstream.Msg) (stop func()) {
	var mu sync.Mutex
	done := false
	var beat *time.Timer
	// Held while beat is assigned: the first beat may fire before
	// AfterFunc returns, and reads beat to re-arm it.
	mu.Lock()
	defer mu.Unlock()
	beat = time.AfterFunc(cfg.AckWait/3, func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		for _, m := range msgs {
			_ = m.InProgress()
		}
		beat.Reset(cfg.AckWait / 3)
	})
	return func() {
		mu.Lock()
		done = true
		beat.Stop()
		mu.Unlock()
	}
}

// settle acknowledges a handled message, or terminates or re-queues it
// after err.
func settle(ctx context.Context, cfg Config, m jetstream.Msg, err error, log zerolog.Logger) {
	if err == nil {
		if aerr := m.Ack(); aerr != nil {
			log.Warn().Err(aerr).Str("subject", m.Subject()).Msg("ack lost; the message will be redelivered and handled again")
		}
		return
	}
	delivered := uint64(1)
	if md, merr := m.Metadata(); merr == nil {
		delivered = md.NumDelivered
	}
	var retry *retryAfterError
	switch {
	case errors.As(err, &retry) && ctx.Err() == nil:
		log.Debug().Err(err).Str("subject", m.Subject()).Dur("after", retry.after).Msg("handed back at the handler's request")
		_ = m.NakWithDelay(max(retry.after, 0))
	case errors.Is(err, ErrPermanent):
		log.Error().Err(err).Str("subject", m.Subject()).Msg("message refused for good")
		giveUp(ctx, cfg, m, err, log)
		_ = m.Term()
	case ctx.Err() != nil:
		// Stopped, most likely by the stop itself: not a verdict on the
		// message, which the next life of the stage handles again. Not
		// at once: a consumer still draining would get it straight back,
		// and every such round trip is a delivery.
		_ = m.NakWithDelay(cfg.AckWait)
	case delivered >= uint64(cfg.MaxDeliver):
		log.Error().Err(err).Str("subject", m.Subject()).Uint64("deliveries", delivered).Msg("giving up after max deliveries")
		giveUp(ctx, cfg, m, err, log)
		_ = m.TermWithReason("max deliveries")
	default:
		if ctx.Err() == nil {
			log.Warn().Err(err).Str("subject", m.Subject()).Uint64("delivery", delivered).Msg("will retry")
		}
		delay := cfg.Backoff << min(delivered-1, 8)
		_ = m.NakWithDelay(min(delay, 30*time.Second))
	}
}

// giveUp lets the stage record a terminal fact for a message about to be
// terminated, retrying a little: after the message is terminated nothing
// will deliver it again.
func giveUp(ctx context.Context, cfg Config, m jetstream.Msg, cause error, log zerolog.Logger) {
	recorded := cfg.GiveUp == nil
	if cfg.GiveUp != nil {
		// The stage may be stopping: the terminal fact still matters.
		gctx := context.WithoutCancel(ctx)
		for attempt := 1; attempt <= giveUpAttempts; attempt++ {
			err := cfg.GiveUp(gctx, m, cause)
			if err == nil {
				recorded = true
				break
			}
			log.Error().Err(err).Str("subject", m.Subject()).Int("attempt", attempt).Msg("could not record the terminal fact of a message given up")
			if attempt < giveUpAttempts {
				time.Sleep(cfg.Backoff << attempt)
			}
		}
	}
	if cfg.GaveUp != nil {
		cfg.GaveUp(cfg.Durable, recorded && cfg.GiveUp != nil)
	}
}

// handBack returns a message delivered while the stage is stopping or
// draining (a drain hands over what was already pulled) without running
// its handler, for another process or the next life of the stage, after
// a delay so that the draining consumer does not get it straight back.
func handBack(take context.Context, cfg Config, m jetstream.Msg) bool {
	if take.Err() == nil {
		return false
	}
	_ = m.NakWithDelay(cfg.AckWait)
	return true
}

// overDelivered gives up a message delivered more than MaxDeliver+1 times
// (one more for a delivery cut off by a stop), before its handler runs: each earlier handling ended without settling it
// (the stage crashed or stopped), and running it again may crash again.
func overDelivered(ctx context.Context, cfg Config, m jetstream.Msg, log zerolog.Logger) bool {
	md, err := m.Metadata()
	if err != nil || md.NumDelivered <= uint64(cfg.MaxDeliver)+1 {
		return false
	}
	cause := fmt.Errorf("delivered %d times without being settled: the stage crashed or stopped while handling it each time", md.NumDelivered)
	log.Error().Err(cause).Str("subject", m.Subject()).Msg("giving up after max deliveries")
	giveUp(ctx, cfg, m, cause, log)
	_ = m.TermWithReason("max deliveries")
	return true
}
