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
	// DuplicateWindow is how long JetStream remembers message ids
	// (default DefaultDuplicateWindow). A re-append inside it is a no-op;
	// outside it every writer's expected-last-sequence guard refuses it
	// (ErrConflict), so the window only makes a retry cheap.
	DuplicateWindow time.Duration
	// LogMaxAge bounds how long live log lines are kept on EKACI_LOGS
	// (full logs are kept by the builder in files).
	LogMaxAge time.Duration
	// EventsMaxBytes is EKACI_EVENTS' byte budget (default
	// DefaultEventsMaxBytes). JetStream reserves it on the server, so
	// nothing else can use that space, and with discard new a full log
	// refuses appends instead of forgetting history: WatchStorage warns
	// long before.
	EventsMaxBytes int64
	// LogsMaxBytes bounds EKACI_LOGS (default DefaultLogsMaxBytes); past
	// it the oldest lines go, so live logs never take the events' space.
	LogsMaxBytes int64
	// LogLinesPerAttempt bounds the live lines kept per build attempt
	// (one subject each; default DefaultLogLinesPerAttempt): the oldest
	// go first, so one noisy build cannot push out every other's.
	LogLinesPerAttempt int64
	// WorkMaxBytes bounds EKACI_WORK (default DefaultWorkMaxBytes); a
	// full work queue refuses new work (discard new) rather than drop
	// builds waiting for a builder.
	WorkMaxBytes int64
	// MemoryStorage is for benchmarks and tests only; production keeps
	// file storage.
	MemoryStorage bool
}

// DefaultDuplicateWindow is StreamOptions.DuplicateWindow's default:
// nats-server's own, and longer than any retry of an append (a publish
// times out in seconds, a pipelined ack in DefaultAckTimeout, redeliveries
// come after an ack wait of at most a minute). It is short because the
// server pays for it: it keeps every id appended within the window in
// memory, and on start it reads back every message of the last window to
// rebuild them, so a restart after busy minutes (100,000 derivations are
// ~600,000 events) reads all of them with a window of ten. Every append is
// guarded on its aggregate's last sequence, so a replay after the window
// decides nothing twice (the replay tests run with a window of a second).
const DefaultDuplicateWindow = 2 * time.Minute

// Byte budgets' defaults: together (21 GiB) they are what a server must be
// able to reserve (Reserved), well below deploy/nats's max_file_store.
const (
	DefaultEventsMaxBytes     = 16 << 30
	DefaultLogsMaxBytes       = 4 << 30
	DefaultWorkMaxBytes       = 1 << 30
	DefaultLogLinesPerAttempt = 100_000
)

// Reserved is the file storage the streams reserve on each server that
// holds a replica: their byte budgets summed. A server whose JetStream
// store limit is below it refuses to create them.
func (o StreamOptions) Reserved() int64 {
	o = o.withDefaults()
	return o.EventsMaxBytes + o.LogsMaxBytes + o.WorkMaxBytes
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.LogMaxAge <= 0 {
		o.LogMaxAge = 7 * 24 * time.Hour
	}
	if o.EventsMaxBytes <= 0 {
		o.EventsMaxBytes = DefaultEventsMaxBytes
	}
	if o.LogsMaxBytes <= 0 {
		o.LogsMaxBytes = DefaultLogsMaxBytes
	}
	if o.LogLinesPerAttempt <= 0 {
		o.LogLinesPerAttempt = DefaultLogLinesPerAttempt
	}
	if o.WorkMaxBytes <= 0 {
		o.WorkMaxBytes = DefaultWorkMaxBytes
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
			MaxBytes:    o.EventsMaxBytes,     // reserved: what makes discard new real
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
			Discard:     jetstream.DiscardNew, // refuse new work rather than drop waiting builds
			MaxBytes:    o.WorkMaxBytes,
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
			// Bytes and lines per attempt bounded too: a build that prints
			// steadily loses its oldest live lines (its file keeps them all),
			// and never the space reserved for events.
			MaxBytes:          o.LogsMaxBytes,
			MaxMsgsPerSubject: o.LogLinesPerAttempt,
			AllowDirect:       true,
		},
	}
}

// Provision creates or updates the streams; calling it again is a no-op.
func Provision(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	d := o.withDefaults()
	for _, cfg := range StreamConfigs(o) {
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		// A cluster that has just started may not count every peer
		// online yet, and refuses to place a replicated stream until it
		// does: worth waiting a little, not failing the stage.
		for deadline := time.Now().Add(15 * time.Second); noPeers(err) && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(100 * time.Millisecond)
			st, err = js.CreateOrUpdateStream(ctx, cfg)
		}
		if isStorageExceeded(err) {
			return fmt.Errorf("provision stream %s: %w: the streams reserve %d MiB (events %d, logs %d, work %d) and the server cannot: lower the budgets (--events-max-mib, --logs-max-mib, --work-max-mib) or raise the server's JetStream store limit (max_file_store, --nats-max-store-mib)",
				cfg.Name, err, d.Reserved()>>20, d.EventsMaxBytes>>20, d.LogsMaxBytes>>20, d.WorkMaxBytes>>20)
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

// errNoSuitablePeers is JetStream's "no suitable peers for placement";
// errStorageExceeded its "insufficient storage resources available" (a
// stream's MaxBytes cannot be reserved).
const (
	errNoSuitablePeers jetstream.ErrorCode = 10005
	errStorageExceeded jetstream.ErrorCode = 10047
)

func isStorageExceeded(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errStorageExceeded
}

func noPeers(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errNoSuitablePeers
}
