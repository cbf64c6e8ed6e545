// Package checker runs each change's checks (commands from the pull
// request's .ekaci/config.json) in a sandbox, and records how each ended.
//
// It takes queued checks from the event log through one durable consumer
// that every checker shares (eventlog.CheckerDurable), so checks spread
// over the checkers of a mesh as builds over builders. For each check it
// waits for its packages (attributes of one of the change's jobs, built by
// the builders; their outputs' bin directories go on PATH), runs the
// command in a copy of the checkout's tree (git archive of its commit,
// never the mirror) under package sandbox, and appends check_started
// then exactly one of check_succeeded, check_failed or check_interrupted
// (with the limit). A head that does not pass is run on the base too,
// when the base has the check, and the fact says whether the base failed
// it as well.
//
// A run whose command, tree (git tree hash), package closure, network and
// limits are all the same as an earlier one's is not run again: its
// result comes from the ekaci_check_results bucket (interruptions are not
// kept there). A checker that dies mid-check leaves check_started without
// an end; the message comes back after its ack wait and the check runs
// again as the next attempt, once.
package checker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/binarycache"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/checker/internal/sandbox"
)

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	// Conn carries live log lines (ekaci.log.<check id>.<attempt>); nil:
	// none.
	Conn    *nats.Conn
	Logger  zerolog.Logger
	Metrics *telemetry.Metrics
	// Name names this checker in check_started.
	Name string
	// CheckLogDir keeps each run's log as <check id>/<attempt>.log.zst (the
	// base's as <attempt>-base.log.zst), next to the build logs.
	CheckLogDir string
	// StateDir holds the sandboxes' directories.
	StateDir string
	// MaxJobs is how many checks run at once (default 2).
	MaxJobs int
	// UIDBase: the checks run as uids UIDBase .. UIDBase+MaxJobs-1
	// (default 61000), which nothing else on the machine may use.
	UIDBase int
	// HostPaths are host directories the sandbox sees read-only (see
	// package sandbox); nil: DefaultHostPaths.
	HostPaths []string
	Limits    Limits
	// NixOptions are passed to nix-store (name, value pairs).
	NixOptions []string
	// Cache, when set, is the mesh's binary cache: a checker with a Nix
	// store of its own fetches its checks' packages from it (the .drv
	// closure, then the built outputs and their runtime closure), as a
	// builder fetches what it builds. Nil: the store is the builders'.
	Cache *binarycache.Cache
	// MountProc mounts a proc of the checker's own over /proc at start:
	// in a container, whose runtime masks /proc, bubblewrap cannot mount
	// one for a check otherwise. Never on a host (see package sandbox).
	MountProc bool
	// AckWait is how long a checker that died holds a check before it
	// runs again (default 30 s).
	AckWait time.Duration
	// MaxDeliver bounds the tries of one check before it is recorded as
	// an infrastructure interruption (default 5).
	MaxDeliver int
	// bwrap is bubblewrap's path (tests of a machine without it).
	bwrap string
}

// Limits bound every check; a check's own timeout_seconds is bounded by
// MaxTimeout.
type Limits struct {
	MaxTimeout  time.Duration // default 1h
	MemoryBytes int64         // default 2 GiB
	Processes   int           // default 512
	OutputBytes int64         // default 64 MiB
	FilesBytes  int64         // default 1 GiB
	Files       int64         // default 100,000
}

// DefaultHostPaths: the shell, coreutils and their libraries, on a machine
// without nixpkgs to provide them. Never /etc, /home, /root, /var or the
// data dir.
var DefaultHostPaths = []string{"/bin", "/usr", "/lib", "/lib64", "/sbin"}

func (c Config) withDefaults() Config {
	if c.MaxJobs <= 0 {
		c.MaxJobs = 2
	}
	if c.UIDBase <= 0 {
		c.UIDBase = 61000
	}
	if c.HostPaths == nil {
		c.HostPaths = DefaultHostPaths
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.Name == "" {
		c.Name = "checker"
	}
	l := &c.Limits
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = time.Hour
	}
	if l.MemoryBytes <= 0 {
		l.MemoryBytes = 2 << 30
	}
	if l.Processes <= 0 {
		l.Processes = 512
	}
	if l.OutputBytes <= 0 {
		l.OutputBytes = 64 << 20
	}
	if l.FilesBytes <= 0 {
		l.FilesBytes = 1 << 30
	}
	if l.Files <= 0 {
		l.Files = 100_000
	}
	return c
}

// ResultsBucket is the key-value bucket of earlier runs' results.
const ResultsBucket = "ekaci_check_results"

type checker struct {
	cfg    Config
	runner *sandbox.Runner
	cache  jetstream.KeyValue
	holder string // this life: checker name and a random suffix
	// unavailable says why this machine cannot sandbox checks; nil: it can.
	unavailable error
}

// Run runs checks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	var runner *sandbox.Runner
	var unavailable error
	if os.Geteuid() != 0 {
		unavailable = fmt.Errorf("%w: the checker runs as uid %d, and it must be root to give each check a uid of its own", sandbox.ErrUnavailable, os.Geteuid())
	} else {
		runner, unavailable = sandbox.NewRunner(sandbox.Config{
			StateDir: filepath.Join(cfg.StateDir, "sandbox"), UIDBase: cfg.UIDBase, UIDs: cfg.MaxJobs, HostPaths: cfg.HostPaths, Bwrap: cfg.bwrap,
			MountProc: cfg.MountProc,
		})
	}
	if unavailable != nil && !errors.Is(unavailable, sandbox.ErrUnavailable) {
		return unavailable
	}
	cache, err := cfg.Events.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ResultsBucket, Description: "ekaci: results of checks, by command, tree, packages and limits",
		History: 1, MaxBytes: 256 << 20, MaxValueSize: 64 << 10,
	})
	if err != nil {
		return fmt.Errorf("check results bucket: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	c := &checker{cfg: cfg, runner: runner, cache: cache, holder: cfg.Name + "-" + hex.EncodeToString(suffix), unavailable: unavailable}
	if unavailable != nil {
		// A machine that cannot sandbox ends every check it takes as an
		// infrastructure interruption saying why, rather than running it
		// unconfined or stopping the stages that do not need it.
		cfg.Logger.Error().Err(unavailable).Msg("checks cannot run here: each is recorded as interrupted (infrastructure)")
	} else {
		cfg.Logger.Info().Str("enforcement", runner.Enforcement()).Bool("network", runner.Network()).Msg("checker ready")
	}
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.CheckerDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Check, "queued")},
		AckWait: cfg.AckWait, Concurrency: cfg.MaxJobs, MaxDeliver: cfg.MaxDeliver,
		// One check per slot: a waiting one is never redelivered for
		// waiting.
		MaxAckPending: cfg.MaxJobs,
		GiveUp:        c.giveUp, GaveUp: cfg.Metrics.CountGiveUp,
	}, c.handle, cfg.Logger)
}

func (c *checker) handle(ctx context.Context, m jetstream.Msg) error {
	rec, err := eventlog.DecodeMsg(m)
	if err != nil {
		return worker.Permanent(err)
	}
	q := rec.Event.GetCheckQueued()
	if q == nil {
		return nil
	}
	if c.unavailable != nil {
		return c.cannot(ctx, rec.ID, q, c.unavailable)
	}
	err = c.check(ctx, rec.ID, q)
	if errors.Is(err, sandbox.ErrUnavailable) {
		return c.cannot(ctx, rec.ID, q, err)
	}
	return err
}

// cannot ends a check this machine cannot run (no sandbox, no network
// for it) as an infrastructure interruption saying why.
func (c *checker) cannot(ctx context.Context, checkID string, q *eventsv1.CheckQueued, why error) error {
	st, err := c.load(ctx, checkID)
	if err != nil || st.ended {
		return err
	}
	return c.end(ctx, checkID, st.last, &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{
		ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: st.attempt,
		Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_INFRASTRUCTURE, Detail: boundDetail(why.Error()),
	}}, q)
}

// giveUp ends a check the checker could not run as an infrastructure
// interruption: its change must not wait for it forever.
func (c *checker) giveUp(ctx context.Context, m jetstream.Msg, cause error) error {
	rec, err := eventlog.DecodeMsg(m)
	if err != nil {
		return fmt.Errorf("no check to end: %w", err)
	}
	q := rec.Event.GetCheckQueued()
	if q == nil {
		return nil
	}
	st, err := c.load(ctx, rec.ID)
	if err != nil || st.ended {
		return err
	}
	return c.end(ctx, rec.ID, st.last, &eventsv1.Event_CheckInterrupted{CheckInterrupted: &eventsv1.CheckInterrupted{
		ChangeId: q.GetChangeId(), Name: q.GetName(), Attempt: st.attempt,
		Kind: eventsv1.CheckInterruptKind_CHECK_INTERRUPT_KIND_INFRASTRUCTURE, Detail: boundDetail("the checker gave up: " + cause.Error()),
	}}, q)
}

// state is what the log says of a check.
type state struct {
	ended   bool
	attempt uint32 // the attempt to run next
	last    uint64
}

func (c *checker) load(ctx context.Context, checkID string) (state, error) {
	recs, last, err := c.cfg.Events.Load(ctx, eventlog.Check, checkID)
	if err != nil {
		return state{}, err
	}
	st := state{attempt: 1, last: last}
	for _, r := range recs {
		switch p := r.Event.GetPayload().(type) {
		case *eventsv1.Event_CheckStarted:
			st.attempt = max(st.attempt, p.CheckStarted.GetAttempt()+1)
		case *eventsv1.Event_CheckSucceeded, *eventsv1.Event_CheckFailed, *eventsv1.Event_CheckInterrupted:
			st.ended = true
		}
	}
	return st, nil
}

// end appends the check's one ending, guarded on its last fact; a
// conflict with an ending already there is that ending.
func (c *checker) end(ctx context.Context, checkID string, last uint64, payload any, q *eventsv1.CheckQueued) error {
	ev := &eventsv1.Event{Id: eventlog.CheckEndedID(checkID), CorrelationId: q.GetChangeId(), CausationId: eventlog.CheckQueuedID(checkID)}
	switch p := payload.(type) {
	case *eventsv1.Event_CheckSucceeded:
		ev.Payload = p
	case *eventsv1.Event_CheckFailed:
		ev.Payload = p
	case *eventsv1.Event_CheckInterrupted:
		ev.Payload = p
	default:
		return fmt.Errorf("end check %s: %T is no ending", checkID, payload)
	}
	_, err := c.cfg.Events.Append(ctx, checkID, ev, eventlog.ExpectLast(last))
	if errors.Is(err, eventlog.ErrConflict) {
		st, lerr := c.load(ctx, checkID)
		if lerr == nil && st.ended {
			return nil
		}
		return fmt.Errorf("end check %s: another fact landed first: %w", checkID, err)
	}
	return err
}
