package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// BatchHandler does the work of several messages at once, in delivery
// order, and returns one error per message (nil: done), as Handler does for
// one.
type BatchHandler func(ctx context.Context, msgs []jetstream.Msg) []error

// RunBatch consumes like Run, but hands the handler every message that is
// waiting, up to cfg.Batch, in one call; acknowledgements, retries and
// terminations are per message as in Run. It is for stages whose work per
// message is a decision and an append (the router, the recorder's reports):
// the handler pipelines the batch's appends, one round trip for all of them
// instead of one each, with no goroutine, context or timer per message.
// cfg.Concurrency is unused: one batch runs at a time.
func RunBatch(ctx context.Context, js jetstream.JetStream, cfg Config, h BatchHandler, log zerolog.Logger) error {
	cfg = cfg.withDefaults()
	// Room for a batch being handled and the next one arriving.
	cfg.MaxAckPending = cmp.Or(cfg.MaxAckPending, 2*cfg.Batch)
	it, err := messages(ctx, js, cfg, cfg.Batch)
	if it == nil {
		return err // nil when stopped while starting
	}
	log = log.With().Str("consumer", cfg.Durable).Logger()
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	msgs := make(chan jetstream.Msg, cfg.Batch)
	errc := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			switch {
			case err == nil:
				msgs <- m
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// As in Run: the iterator stays usable and pulls again.
				log.Warn().Err(err).Msg("consumer heartbeats missed; pulling again")
			case errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil:
				return
			default:
				errc <- fmt.Errorf("consumer %s: %w", cfg.Durable, err)
				return
			}
		}
	}()
	defer func() {
		it.Stop()
		for range msgs { // let the reader finish
		}
	}()
	batch := make([]jetstream.Msg, 0, cfg.Batch)
	for {
		batch = batch[:0]
		select {
		case err := <-errc:
			return err
		case m, ok := <-msgs:
			if !ok {
				return nil // drained after ctx ended
			}
			batch = append(batch, m)
		}
	take: // what is waiting, without waiting for more
		for len(batch) < cfg.Batch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break take
				}
				batch = append(batch, m)
			default:
				break take
			}
		}
		handleBatch(ctx, cfg, h, batch, log)
	}
}

func handleBatch(ctx context.Context, cfg Config, h BatchHandler, batch []jetstream.Msg, log zerolog.Logger) {
	batch = slices.DeleteFunc(batch, func(m jetstream.Msg) bool { return handBack(ctx, cfg, m) || overDelivered(ctx, cfg, m, log) })
	if len(batch) == 0 {
		return
	}
	stop := beatWhile(cfg, batch...) // one timer for the whole batch
	errs := h(ctx, batch)
	stop()
	for i, m := range batch {
		var err error
		switch {
		case i < len(errs):
			err = errs[i]
		default:
			err = fmt.Errorf("batch handler returned %d results for %d messages", len(errs), len(batch))
		}
		settle(ctx, cfg, m, err, log)
	}
}
