package eventlog

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// StorageWarnAt is the share of a stream's byte budget past which
// WatchStorage warns: for EKACI_EVENTS, whose appends fail once it is full
// (discard new), that leaves an operator time to raise the budget.
const StorageWarnAt = 0.8

// Usage is one stream's stored bytes against its byte budget (MaxBytes; 0
// when it has none).
type Usage struct {
	Stream          string
	Bytes, MaxBytes uint64
}

// Full is the share of the budget in use (0 without a budget).
func (u Usage) Full() float64 {
	if u.MaxBytes == 0 {
		return 0
	}
	return float64(u.Bytes) / float64(u.MaxBytes)
}

// WatchStorage samples the usage of ekaci's streams every interval (and
// once at the start) until ctx ends, then returns. report, when set, gets
// every sample (for the ekaci_stream_bytes gauges). A stream past
// StorageWarnAt of its budget is logged at warn when it crosses it and at
// every further 5 %, EKACI_EVENTS at error from 95 %: a full event log
// refuses appends and changes stop concluding. A failed sample is logged
// at debug and skipped.
func WatchStorage(ctx context.Context, js jetstream.JetStream, every time.Duration, log zerolog.Logger, report func(Usage)) {
	if every <= 0 {
		every = 15 * time.Second
	}
	warned := map[string]int{} // stream -> last 5 % step warned about
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, name := range []string{EventsStream, LogsStream, WorkStream} {
			sctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
			u, err := streamUsage(sctx, js, name)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				log.Debug().Err(err).Str("stream", name).Msg("sample stream usage")
				continue
			}
			if report != nil {
				report(u)
			}
			warnUsage(log, u, warned)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func streamUsage(ctx context.Context, js jetstream.JetStream, name string) (Usage, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return Usage{}, fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo() // Stream just fetched it
	u := Usage{Stream: name, Bytes: info.State.Bytes}
	if info.Config.MaxBytes > 0 {
		u.MaxBytes = uint64(info.Config.MaxBytes)
	}
	return u, nil
}

// warnUsage logs u when it crossed a 5 % step at or past StorageWarnAt
// since the last warning, and once when it falls back below.
func warnUsage(log zerolog.Logger, u Usage, warned map[string]int) {
	step := int(u.Full() * 20) // 16 = 80 %
	last, was := warned[u.Stream]
	switch {
	case u.Full() < StorageWarnAt:
		if was {
			log.Info().Str("stream", u.Stream).Uint64("bytes", u.Bytes).Uint64("max_bytes", u.MaxBytes).Msg("stream back under its storage warning level")
			delete(warned, u.Stream)
		}
		return
	case was && step <= last:
		return
	}
	warned[u.Stream] = step
	ev := log.Warn()
	msg := "stream is filling its byte budget"
	if u.Stream == EventsStream {
		msg = "the event log is filling its byte budget: once full, every append fails (raise --events-max-mib, and the server's store limit with it)"
		if u.Full() >= 0.95 {
			ev = log.Error()
		}
	}
	ev.Str("stream", u.Stream).Uint64("bytes", u.Bytes).Uint64("max_bytes", u.MaxBytes).
		Str("full", fmt.Sprintf("%.0f%%", 100*u.Full())).Msg(msg)
}
