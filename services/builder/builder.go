// Package builder pulls build requests for the systems and pools it serves
// from EKACI_WORK, runs nix-build on each, streams every log line live to
// ekaci.log.<drv-id>.<attempt> (and to a compressed file per attempt), and
// reports what happened on ekaci.work.report.<drv-id> for the recorder to
// decide. Builders on other machines run this same package against the
// same NATS: work is pulled, never pushed.
package builder

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/builder/internal/nixbuild"
)

// Pool is one queue this builder serves.
type Pool struct {
	System  string
	Class   workv1.BuildClass
	MaxJobs int
}

// Config wires the stage.
type Config struct {
	Log    *eventlog.Log
	Conn   *nats.Conn // live log lines go out as plain NATS messages
	Logger zerolog.Logger
	Name   string // this builder's name, recorded on each attempt
	Pools  []Pool
	// Health knows the remote machines and which answer; a remote pool's
	// build waits until one that can take it does, and nix-build gets
	// only those (--builders, with --max-jobs 0 so it never falls back to
	// building here).
	Health          *machines.Health
	NixOptions      []string
	NoOutputTimeout time.Duration
	TotalTimeout    time.Duration
	// ShutdownGrace is how long running builds may go on after shutdown
	// begins before they are stopped (and reported as interrupted).
	ShutdownGrace time.Duration
	LogDir        string
	// Metrics, when set, counts active and finished builds.
	Metrics *telemetry.Metrics
	// NoBatch builds each derivation with a nix-build of its own instead
	// of batching the ready ones of a pool into one nix-build per lane.
	NoBatch bool
	// Noop is for benchmarks only: nothing is built, every request is
	// reported at once as a success (or as a failure where Noop.Fail
	// says so). Run logs it loudly; no flag of `ekaci run`/`serve` sets it.
	Noop *Noop
}

// Noop makes a builder that builds nothing (benchmarks of the scheduler).
type Noop struct {
	// Fail, when set, picks the attempts to report as failed.
	Fail func(drvID string, attempt uint32) bool
}

// Run serves every pool until ctx ends, letting running builds finish
// within the shutdown grace.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.Noop != nil {
		cfg.Logger.Error().Msg("NO-OP BUILDER: nothing is built; every build is reported without running Nix (benchmark mode)")
	}
	// Batches outlive a shutdown by the grace period, as single builds do.
	lanesCtx, stopLanes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLanes()
	stopAfterGrace := context.AfterFunc(ctx, func() {
		t := time.NewTimer(cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			stopLanes()
		case <-lanesCtx.Done():
		}
	})
	defer stopAfterGrace()
	var lanes sync.WaitGroup
	defer lanes.Wait()
	defer stopLanes() // after the workers drained: no build is waiting any more

	g, ctx := errgroup.WithContext(ctx)
	for _, p := range cfg.Pools {
		b := &build{cfg: cfg, pool: p}
		concurrency := max(p.MaxJobs, 1)
		if cfg.Noop == nil && !cfg.NoBatch && p.Class != workv1.BuildClass_BUILD_CLASS_REMOTE {
			b.batch = newBatcher(p.MaxJobs, nixbuild.BatchOptions{
				NixOptions: cfg.NixOptions, NoOutputTimeout: cfg.NoOutputTimeout, TotalTimeout: cfg.TotalTimeout,
			})
			lanes.Add(1)
			go func() {
				defer lanes.Done()
				b.batch.run(lanesCtx)
			}()
			// Enough requests in hand that the lanes find a batch waiting.
			concurrency = min(max(p.MaxJobs, 1)*maxBatch, 128)
		}
		g.Go(func() error {
			return worker.Run(ctx, cfg.Log.JetStream(), worker.Config{
				Stream:      eventlog.WorkStream,
				Durable:     "builder-" + eventlog.SystemToken(p.System) + "-" + eventlog.ClassToken(p.Class),
				Filters:     []string{eventlog.BuildSubject(p.System, p.Class)},
				Concurrency: concurrency,
				// No more requests delivered than there are slots: one waiting
				// for a slot gets no heartbeats, and behind builds longer than
				// the ack wait it would be delivered again and built twice (or,
				// past the de-duplication window, reported as a process death).
				MaxAckPending: concurrency,
				// Short, with heartbeats while a build runs: a builder that dies
				// has its build redelivered (and recorded as a process death) soon.
				AckWait: 10 * time.Second,
			}, b.handle, cfg.Logger)
		})
	}
	return g.Wait()
}

type build struct {
	cfg   Config
	pool  Pool
	batch *batcher // nil: one nix-build per derivation
}

func (b *build) handle(ctx context.Context, m jetstream.Msg) error {
	req := &workv1.BuildRequest{}
	if err := eventlog.DecodeMessage(m.Data(), req); err != nil {
		return worker.Permanent(fmt.Errorf("decode build request %s: %w", m.Subject(), err))
	}
	log := b.cfg.Logger.With().Str("drv", req.GetDrvPath()).Uint32("attempt", req.GetAttempt()).Logger()
	// The common case needs no read: the request carries the sequence the
	// derivation was routed at. Only when the history moved on (a
	// redelivery, a builder that died) is it read and decided.
	last := req.GetLastSeq()
	if last == 0 {
		var err error
		if last, err = b.resolve(ctx, req, log); err != nil || last == 0 {
			return err
		}
	}
	// A remote build waits here, before it is recorded as started, until
	// a remote machine that can take it answers its health check.
	remote := req.GetClass() == workv1.BuildClass_BUILD_CLASS_REMOTE
	var remoteLines []string
	if remote {
		if b.cfg.Health == nil {
			return worker.Permanent(fmt.Errorf("build %s: queued for a remote builder, but this builder has no machines configured", req.GetDrvPath()))
		}
		ms, err := b.cfg.Health.WaitUsable(ctx, req.GetSystem(), req.GetRequiredSystemFeatures())
		if err != nil {
			return err
		}
		for _, m := range ms {
			remoteLines = append(remoteLines, m.Line())
		}
	}
	started := &eventsv1.Event{
		Id: "started-" + req.GetDrvId() + "-" + strconv.FormatUint(uint64(req.GetAttempt()), 10),
		Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{
			Attempt: req.GetAttempt(), Builder: b.cfg.Name,
		}},
	}
	startedAt, err := b.cfg.Log.Append(ctx, req.GetDrvId(), started, eventlog.ExpectLast(last))
	if errors.Is(err, eventlog.ErrConflict) && req.GetLastSeq() != 0 {
		if last, err = b.resolve(ctx, req, log); err != nil || last == 0 {
			return err
		}
		startedAt, err = b.cfg.Log.Append(ctx, req.GetDrvId(), started, eventlog.ExpectLast(last))
	}
	if err != nil {
		return err
	}
	startedSeq := startedAt.Seq
	log.Info().Msg("build started")

	// Builds outlive a shutdown by the grace period, then stop.
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(b.cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-bctx.Done():
		}
	})
	defer stop()

	if b.cfg.Noop != nil {
		rep := &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED, StartedSeq: startedSeq}
		if b.cfg.Noop.Fail != nil && b.cfg.Noop.Fail(req.GetDrvId(), req.GetAttempt()) {
			rep.Outcome, rep.ExitCode, rep.LogTail = workv1.BuildOutcome_BUILD_OUTCOME_FAILED, 100, "no-op builder: failure chosen by the benchmark"
		}
		return b.report(context.WithoutCancel(ctx), req, rep)
	}

	liveSubject := eventlog.LogSubject(req.GetDrvId(), req.GetAttempt())
	opts := nixbuild.Options{
		NixOptions:      b.cfg.NixOptions,
		NoOutputTimeout: b.cfg.NoOutputTimeout,
		TotalTimeout:    b.cfg.TotalTimeout,
		LogPath:         filepath.Join(b.cfg.LogDir, req.GetDrvId(), fmt.Sprintf("%d.log.zst", req.GetAttempt())),
		OnLine: func(line []byte) {
			if b.cfg.Conn != nil {
				_ = b.cfg.Conn.Publish(liveSubject, line)
			}
		},
	}
	if remote {
		opts.Builders = strings.Join(remoteLines, " ; ")
		opts.MaxJobs = 0
		opts.NixOptions = append(slices.Clone(opts.NixOptions), "max-jobs", "0")
	}
	if m := b.cfg.Metrics; m != nil {
		active := m.BuildsActive.WithLabelValues(b.pool.System, b.cfg.Name)
		active.Inc()
		defer active.Dec()
	}
	var res nixbuild.Result
	if b.batch != nil {
		res, err = b.batch.build(bctx, nixbuild.Job{DrvPath: req.GetDrvPath(), LogPath: opts.LogPath, OnLine: opts.OnLine})
	} else {
		res, err = nixbuild.Build(bctx, req.GetDrvPath(), opts)
	}
	if err != nil {
		return fmt.Errorf("build %s: %w", req.GetDrvPath(), err)
	}
	rep := &workv1.BuildReport{
		ExitCode: int32(res.ExitCode), LogTail: res.Tail, DurationMs: res.Duration.Milliseconds(), LogPath: res.LogPath,
		StartedSeq: startedSeq,
	}
	switch res.Outcome {
	case nixbuild.Succeeded:
		rep.Outcome = workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED
	case nixbuild.Failed:
		rep.Outcome = workv1.BuildOutcome_BUILD_OUTCOME_FAILED
	default:
		rep.Outcome = workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED
		rep.Interruption = interruptKind(res.Interruption)
		detail := res.Detail
		if ctx.Err() != nil && res.Interruption == nixbuild.Cancelled {
			// Stopped by our own shutdown, not by a person: retryable.
			rep.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH
			detail = "stopped: the builder shut down before the build finished"
		}
		if detail != "" {
			rep.LogTail = detail + "\n" + rep.LogTail
		}
	}
	outcome := strings.ToLower(strings.TrimPrefix(rep.GetOutcome().String(), "BUILD_OUTCOME_"))
	if m := b.cfg.Metrics; m != nil {
		m.BuildsFinished.WithLabelValues(outcome).Inc()
		m.BuildDuration.WithLabelValues(outcome).Observe(res.Duration.Seconds())
	}
	log.Info().Str("outcome", outcome).Dur("took", res.Duration).Msg("build finished")
	return b.report(context.WithoutCancel(ctx), req, rep)
}

// resolve reads the derivation's history and decides what a request means
// now: the sequence to append build_started after, or 0 when the request is
// stale (dropped) or was for a build that died mid-way (reported as such).
func (b *build) resolve(ctx context.Context, req *workv1.BuildRequest, log zerolog.Logger) (uint64, error) {
	history, last, err := b.cfg.Log.Load(ctx, eventlog.Drv, req.GetDrvId())
	if err != nil {
		return 0, err
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, h := range history {
		evs[i] = h.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil {
		return 0, worker.Permanent(fmt.Errorf("fold %s: %w", req.GetDrvId(), err))
	}
	switch {
	case cur.State == buildstate.Building && cur.Attempt == req.GetAttempt():
		// Redelivered while recorded as Building: the builder that took it
		// died mid-build. Record that; the recorder decides on a retry.
		log.Warn().Msg("build was running on a builder that stopped; reporting process death")
		return 0, b.report(ctx, req, &workv1.BuildReport{
			Outcome: workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED, ExitCode: -1,
			Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH,
			LogTail:      "stopped: the builder running this attempt stopped before reporting",
			StartedSeq:   last,
		})
	case cur.State != buildstate.Buildable || cur.Attempt != req.GetAttempt():
		log.Info().Stringer("state", cur.State).Msg("stale build request dropped")
		return 0, nil
	}
	return last, nil
}

func (b *build) report(ctx context.Context, req *workv1.BuildRequest, rep *workv1.BuildReport) error {
	rep.DrvId, rep.DrvPath, rep.Attempt, rep.Builder = req.GetDrvId(), req.GetDrvPath(), req.GetAttempt(), b.cfg.Name
	_, err := eventlog.Publish(ctx, b.cfg.Log.JetStream(), eventlog.ReportSubject(req.GetDrvId()),
		"report-"+req.GetDrvId()+"-"+strconv.FormatUint(uint64(req.GetAttempt()), 10), rep)
	return err
}

func interruptKind(i nixbuild.Interruption) eventsv1.InterruptKind {
	switch i {
	case nixbuild.Timeout:
		return eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT
	case nixbuild.Cancelled:
		return eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED
	case nixbuild.OutOfMemory:
		return eventsv1.InterruptKind_INTERRUPT_KIND_OUT_OF_MEMORY
	default:
		return eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH
	}
}
