package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names and subject roots.
const (
	EventsStream = "EKACI_EVENTS"
	WorkStream   = "EKACI_WORK"
	LogsStream   = "EKACI_LOGS"

	EventsRoot = "ekaci.evt"
	WorkRoot   = "ekaci.work"
	LogsRoot   = "ekaci.log"
)

// StreamOptions are the settings an operator may change.
type StreamOptions struct {
	// Replicas is 1 for the all-in-one, 3 on a production cluster.
	Replicas int
	// DuplicateWindow is how long JetStream remembers message ids. A
	// re-append inside it is a no-op; outside it the deciders' state
	// checks still refuse a repeated transition.
	DuplicateWindow time.Duration
	// LogMaxAge bounds how long live log lines are kept on EKACI_LOGS
	// (full logs are kept by the builder in files).
	LogMaxAge time.Duration
	// MemoryStorage is for benchmarks and tests only; production keeps
	// file storage.
	MemoryStorage bool
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 10 * time.Minute
	}
	if o.LogMaxAge <= 0 {
		o.LogMaxAge = 7 * 24 * time.Hour
	}
	return o
}

// StreamConfigs returns the three stream configurations.
func StreamConfigs(o StreamOptions) []jetstream.StreamConfig {
	o = o.withDefaults()
	storage := jetstream.FileStorage
	if o.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.StreamConfig{
		{
			Name:        EventsStream,
			Description: "ekaci event log: every fact about changes, jobsets and derivations",
			Subjects:    []string{EventsRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew, // a full log refuses writes rather than forgetting history
			Storage:     storage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
			AllowDirect: true,
		},
		{
			Name:        WorkStream,
			Description: "ekaci work items: builds waiting for builders and builders' reports",
			Subjects:    []string{WorkRoot + ".>"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     storage,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			AllowDirect: true, // so `nats stream view` can show waiting work
		},
		{
			Name:        LogsStream,
			Description: "ekaci live build-log lines",
			Subjects:    []string{LogsRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     storage,
			Replicas:    o.Replicas,
			MaxAge:      o.LogMaxAge,
			AllowDirect: true,
		},
	}
}

// Provision creates or updates the streams; calling it again is a no-op.
func Provision(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range StreamConfigs(o) {
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		// A cluster that has just started may not count every peer
		// online yet, and refuses to place a replicated stream until it
		// does: worth waiting a little, not failing the stage.
		for deadline := time.Now().Add(15 * time.Second); noPeers(err) && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(100 * time.Millisecond)
			st, err = js.CreateOrUpdateStream(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
		if cfg.Replicas > 1 {
			// A replicated stream answers once its Raft group has a
			// leader; a publish before that gets no response at all.
			for {
				info, err := st.Info(ctx)
				if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("provision stream %s: no leader elected: %w", cfg.Name, ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// errNoSuitablePeers is JetStream's "no suitable peers for placement".
const errNoSuitablePeers jetstream.ErrorCode = 10005

func noPeers(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errNoSuitablePeers
}
