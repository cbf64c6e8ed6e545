package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// WatchConsumers samples JetStream every interval (and once at the start)
// until ctx ends, then returns:
//
//   - ekaci_consumer_lag_messages{stream,consumer} is set for every consumer
//     of every stream to its NumPending: messages on the consumer's filter
//     not yet delivered to it. Delivered-but-unacknowledged messages
//     (NumAckPending) are not lag: for builders they are builds running,
//     which may take hours and are counted by ekaci_builds_active. A
//     consumer that disappears loses its series.
//   - ekaci_build_queue_depth{system,class} is set from the per-subject
//     message counts of EKACI_WORK under ekaci.work.build.<system>.<class>.
//     In a work queue a message stays until acknowledged, so this counts
//     builds not yet finished by a builder, running ones included. A
//     system/class whose queue empties is set to 0, not dropped, so
//     dashboards show the drain.
//
// A failed sample is logged (at warn the first time, at debug while the
// same error repeats) and leaves the gauges as they were.
func (m *Metrics) WatchConsumers(ctx context.Context, js jetstream.JetStream, every time.Duration, log zerolog.Logger) {
	if every <= 0 {
		every = 5 * time.Second
	}
	w := &watcher{m: m, js: js, lag: map[[2]string]bool{}, depth: map[[2]string]bool{}}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		// Bound each sample so a stuck request cannot stall the next ones;
		// at least a second, because a loaded server answers slowly.
		sctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		err := w.sample(sctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			if lastErr != "" {
				log.Info().Msg("consumer metrics sampled again")
			}
			lastErr = ""
		case err.Error() != lastErr:
			log.Warn().Err(err).Msg("sample consumer metrics")
			lastErr = err.Error()
		default:
			log.Debug().Err(err).Msg("sample consumer metrics")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watcher remembers which label sets it set, to remove or zero the ones
// that are gone.
type watcher struct {
	m     *Metrics
	js    jetstream.JetStream
	lag   map[[2]string]bool // {stream, consumer}
	depth map[[2]string]bool // {system, class}
}

func (w *watcher) sample(ctx context.Context) error {
	lag := map[[2]string]uint64{}
	var depth map[[2]string]uint64
	var errs []error

	streams := w.js.ListStreams(ctx)
	var names []string
	// Drain the channel fully: the lister's goroutine blocks until it can
	// hand over every page or ctx ends.
	for si := range streams.Info() {
		names = append(names, si.Config.Name)
	}
	if err := streams.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	for _, name := range names {
		s, err := w.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
			continue
		}
		cl := s.ListConsumers(ctx)
		for ci := range cl.Info() {
			lag[[2]string{name, ci.Name}] = ci.NumPending
		}
		if err := cl.Err(); err != nil {
			errs = append(errs, fmt.Errorf("list consumers of %s: %w", name, err))
		}
		if name == eventlog.WorkStream {
			if depth, err = queueDepth(ctx, s); err != nil {
				errs = append(errs, err)
			}
		}
	}

	for k, v := range lag {
		w.m.ConsumerLag.WithLabelValues(k[0], k[1]).Set(float64(v))
	}
	// Forget consumers only after a complete sample; a partial one would
	// drop series that merely were not seen this time.
	if len(errs) == 0 {
		for k := range w.lag {
			if _, ok := lag[k]; !ok {
				w.m.ConsumerLag.DeleteLabelValues(k[0], k[1])
				delete(w.lag, k)
			}
		}
	}
	for k := range lag {
		w.lag[k] = true
	}

	if depth != nil {
		for k := range w.depth {
			if _, ok := depth[k]; !ok {
				w.m.BuildQueueDepth.WithLabelValues(k[0], k[1]).Set(0)
			}
		}
		for k, v := range depth {
			w.m.BuildQueueDepth.WithLabelValues(k[0], k[1]).Set(float64(v))
			w.depth[k] = true
		}
	}
	return errors.Join(errs...)
}

// queueDepth counts EKACI_WORK's messages per build subject. The result is
// non-nil on success, empty when no build waits.
func queueDepth(ctx context.Context, s jetstream.Stream) (map[[2]string]uint64, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(eventlog.BuildsFilter))
	if err != nil {
		return nil, fmt.Errorf("subjects of %s: %w", eventlog.WorkStream, err)
	}
	depth := map[[2]string]uint64{}
	for subj, n := range info.State.Subjects {
		system, class, ok := eventlog.ParseBuildSubject(subj)
		if !ok {
			continue // not ours to count
		}
		depth[[2]string{system, class}] += n
	}
	return depth, nil
}
