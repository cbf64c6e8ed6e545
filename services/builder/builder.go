// Package builder pulls build requests for the systems and pools it serves
// from EKACI_WORK, realises each derivation with Nix (all its outputs),
// judges it by the Nix store (see internal/nixbuild), streams every log
// line live to ekaci.log.<drv-id>.<attempt> (and to a compressed file per
// attempt, capped), and reports what happened on ekaci.work.report.<drv-id>
// for the recorder to decide. Builders on other machines run this same
// package against the same NATS: work is pulled, never pushed.
//
// One holder per attempt: each life of a builder process is a holder
// (HoldersBucket). drv_build_started names the holder and its lease and is
// appended when Nix is about to build the derivation, not when the request
// is taken. Another copy of a request for an attempt that is Building is
// kept, never acked, while its holder is alive (it may be the holder's own
// message, redelivered when its acks were late), until the attempt ends
// (then it is acked) or the holder is gone (then its death is reported):
// the attempt is reported dead only once the holder's lease has passed
// without a heartbeat, and never left without a request to report it.
package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/binarycache"
	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/builder/internal/nixbuild"
	"github.com/ekaci/ekaci/services/builder/internal/outroots"
)

// Config wires the stage.
type Config struct {
	Events *eventlog.Log
	Conn   *nats.Conn // live log lines go out as plain NATS messages
	Logger zerolog.Logger
	Name   string          // this builder's name, recorded on each attempt
	Pools  []machines.Pool // the queues it serves (machines.Topology.Pools)
	// Health knows the remote machines and which answer; a remote pool's
	// build waits until one that can take it does, and nix-store gets
	// only those (--builders, with --max-jobs 0 so it never falls back to
	// building here).
	Health          *machines.Health
	NixOptions      []string
	NoOutputTimeout time.Duration
	TotalTimeout    time.Duration
	// ShutdownGrace is how long running builds may go on after shutdown
	// begins before they are stopped (and reported as interrupted).
	ShutdownGrace time.Duration
	// BuildLogDir keeps each attempt's build log,
	// <BuildLogDir>/<drv id>/<attempt>.log.zst.
	BuildLogDir string
	// AttemptLogMaxBytes caps each attempt's build log file (and its live
	// lines); past it a notice line is written and the build goes on. 0
	// means nixbuild.DefaultMaxLogBytes (256 MiB); < 0 no cap.
	AttemptLogMaxBytes int64
	// StateDir keeps what outlives one life of the builder: a file per
	// running nix-store (so the next life ends what a killed one left
	// running, before it builds again) and the last holder id (so the next
	// life clears its heartbeat at once), and the GC roots of the outputs
	// it found valid (gcroots/, see internal/outroots), kept until the
	// jobsets open meanwhile have concluded. It is locked while the
	// builder runs. Empty: none of that (tests).
	StateDir string
	// Lease is how long after its last heartbeat this builder's attempts
	// count as abandoned; 0 means DefaultLease.
	Lease time.Duration
	// Metrics, when set, counts active and finished builds.
	Metrics *telemetry.Metrics
	// NoBatch builds each derivation with a nix-store of its own instead
	// of batching the ready ones of a pool into one nix-store per lane.
	NoBatch bool
	// Cache, when set, is the mesh's binary cache: a builder with a Nix
	// store of its own fetches each .drv closure from it before building,
	// and pushes each success's outputs to it (see cache.go).
	Cache *binarycache.Cache
	// PushTo are more caches each success's outputs are pushed to (an
	// upstream S3 or attic cache, say).
	PushTo []binarycache.Cache
	// PushTimeout bounds each push; 0 means DefaultPushTimeout.
	PushTimeout time.Duration
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

// rootsPoll is how often the log is asked for jobsets that began or
// concluded (see outroots): roots go within this long of a conclusion.
var rootsPoll = 5 * time.Second

// workerMaxDeliver is the consumer's MaxDeliver (0: the worker's default);
// tests lower it to reach the give-up path quickly.
var workerMaxDeliver = 0

// maxReportTail bounds a report's log tail in bytes, detail included: the
// report and the fact made of it must fit the server's max payload (1 MiB
// in the mesh) with everything else they carry.
const maxReportTail = nixbuild.DefaultTailBytes + 4<<10

// Run serves every pool until ctx ends, letting running builds finish
// within the shutdown grace.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Noop != nil {
		cfg.Logger.Error().Msg("NO-OP BUILDER: nothing is built; every build is reported without running Nix (benchmark mode)")
	}
	id := newHolderID(cfg.Name)
	log := cfg.Logger.With().Str("holder", id).Logger()

	var tracker *nixbuild.Tracker
	var previous string
	if cfg.StateDir != "" {
		unlock, err := service.Lock(cfg.StateDir)
		if err != nil {
			return fmt.Errorf("builder state dir: %w", err)
		}
		defer unlock()
		running := filepath.Join(cfg.StateDir, "running")
		// Before building again: end whatever a previous life left running.
		sw, err := nixbuild.Sweep(running, 5*time.Second)
		if err != nil {
			return err
		}
		if sw.Ended > 0 {
			log.Warn().Int("ended", sw.Ended).Strs("drv_paths", sw.Drvs).Strs("previous_holders", sw.Owners).
				Msg("ended Nix processes a previous life of this builder left running")
		}
		holderFile := filepath.Join(cfg.StateDir, "holder")
		if b, err := os.ReadFile(holderFile); err == nil {
			previous = strings.TrimSpace(string(b))
		}
		if err := os.WriteFile(holderFile, []byte(id+"\n"), 0o644); err != nil {
			return fmt.Errorf("builder state dir: %w", err)
		}
		if tracker, err = nixbuild.NewTracker(running, id); err != nil {
			return err
		}
	}
	slots := 0
	for _, p := range cfg.Pools {
		slots += max(p.MaxJobs, 1)
	}
	hs, err := openHolders(ctx, cfg.Events.JetStream(), id, cfg.Name, slots, cfg.Lease, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// Drained by an operator, the pools take no new work (see drains);
	// the heartbeat says whether this process noticed.
	drainState, stopDrains, err := followDrains(ctx, cfg.Events, cfg.Name, func(drained bool) { hs.setDrained(ctx, drained) }, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer stopDrains()
	if drainState.drained() {
		hs.setDrained(ctx, true)
	}
	// The previous life is dead (we hold its lock): its attempts need not
	// wait out its lease.
	hs.forget(ctx, previous)
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	var beating sync.WaitGroup
	beating.Add(1)
	go func() {
		defer beating.Done()
		hs.beat(beatCtx)
	}()
	// Last: the heartbeat stops (and its key goes) only after every
	// handler reported.
	defer beating.Wait()
	defer stopBeat()

	store := nixbuild.NewStore(cfg.NixOptions)
	defer store.Close()

	// Outputs found valid stay GC roots in this builder's own store until
	// the jobsets open meanwhile have concluded (see outroots); builds
	// wait until the log told which jobsets are open.
	var roots *outroots.Roots
	var following sync.WaitGroup
	defer following.Wait()
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	if cfg.StateDir != "" && cfg.Noop == nil {
		if roots, err = outroots.New(filepath.Join(cfg.StateDir, "gcroots"), cfg.NixOptions, log); err != nil {
			return err
		}
		following.Add(1)
		go func() {
			defer following.Done()
			_ = roots.Follow(followCtx, cfg.Events, rootsPoll)
		}()
		select {
		case <-roots.Ready():
		case <-ctx.Done():
			return nil
		}
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

	run := &runtime{cfg: cfg, holders: hs, store: store, tracker: tracker, roots: roots, log: log, held: map[string]chan struct{}{}}
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range cfg.Pools {
		b := &build{runtime: run, pool: p}
		concurrency := max(p.MaxJobs, 1)
		if cfg.Noop == nil && !cfg.NoBatch && p.Class != workv1.BuildClass_BUILD_CLASS_REMOTE {
			b.batch = newBatcher(p.MaxJobs, run.nixOptions())
			lanes.Add(1)
			go func() {
				defer lanes.Done()
				b.batch.run(lanesCtx)
			}()
			// Enough requests in hand that the lanes find a batch waiting.
			concurrency = min(max(p.MaxJobs, 1)*maxBatch, 128)
		}
		wcfg := worker.Config{
			Stream:      eventlog.WorkStream,
			Durable:     eventlog.BuilderDurable(p.System, p.Class),
			Filters:     []string{eventlog.BuildSubject(p.System, p.Class)},
			Concurrency: concurrency,
			// No more requests delivered than there are slots: one waiting
			// for a slot gets no heartbeats, and behind builds longer than
			// the ack wait it would be delivered again.
			MaxAckPending: concurrency,
			// Short, with heartbeats while a build runs: a builder that dies
			// has its build redelivered soon (and reported dead once its
			// holder's lease has passed).
			AckWait:    10 * time.Second,
			MaxDeliver: workerMaxDeliver,
			GiveUp:     b.giveUp,
			GaveUp:     run.gaveUp,
		}
		g.Go(func() error {
			// While drained, nothing is pulled; a drain lets the builds
			// running go on (their context is ctx, not take) to their end.
			for {
				take, stop, ok := drainState.open(ctx)
				if !ok {
					return nil
				}
				b.takeMu.Lock()
				b.take = take
				b.takeMu.Unlock()
				err := worker.RunWhile(ctx, take, cfg.Events.JetStream(), wcfg, b.handle, log)
				stop()
				if err != nil || ctx.Err() != nil {
					return err
				}
				log.Info().Str("system", p.System).Stringer("class", p.Class).Msg("pool drained: its running builds ended; it takes no work until resumed")
			}
		})
	}
	return g.Wait()
}

// runtime is what every pool of one builder life shares.
type runtime struct {
	cfg     Config
	holders *holders
	store   *nixbuild.Store
	tracker *nixbuild.Tracker
	roots   *outroots.Roots // nil: outputs are not rooted
	log     zerolog.Logger

	mu   sync.Mutex
	held map[string]chan struct{} // attempts this life is handling now (drvID/attempt), closed when done
}

func (r *runtime) nixOptions() nixbuild.Options {
	o := nixbuild.Options{
		NixOptions: r.cfg.NixOptions, NoOutputTimeout: r.cfg.NoOutputTimeout, TotalTimeout: r.cfg.TotalTimeout,
		MaxLogBytes: r.cfg.AttemptLogMaxBytes, Store: r.store, Tracker: r.tracker,
	}
	if r.roots != nil {
		o.Root = r.roots.Add
	}
	if m := r.cfg.Metrics; m != nil {
		o.Timed = func(step string, took time.Duration) { m.BuilderSteps.WithLabelValues(step).Observe(took.Seconds()) }
	}
	return o
}

func (r *runtime) gaveUp(consumer string, recorded bool) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.CountGiveUp(consumer, recorded)
	}
}

func attemptKey(req *workv1.BuildRequest) string {
	return req.GetDrvId() + "/" + strconv.FormatUint(uint64(req.GetAttempt()), 10)
}

// hold marks an attempt as handled by this life. When it already is
// (another copy of its request, or its own redelivery), it returns false
// and a channel closed once that handling ends.
func (r *runtime) hold(req *workv1.BuildRequest) (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := attemptKey(req)
	if done, ok := r.held[k]; ok {
		return false, done
	}
	r.held[k] = make(chan struct{})
	return true, nil
}

func (r *runtime) release(req *workv1.BuildRequest) {
	r.mu.Lock()
	k := attemptKey(req)
	close(r.held[k])
	delete(r.held, k)
	r.mu.Unlock()
}

type build struct {
	*runtime
	pool  machines.Pool
	batch *batcher // nil: one nix-store per derivation

	takeMu sync.Mutex
	take   context.Context // ends when the builder is drained (nil: never drained)
}

// untilDrained returns a context that ends with ctx or when the builder is
// drained, whichever comes first.
func (b *build) untilDrained(ctx context.Context) (context.Context, context.CancelFunc) {
	b.takeMu.Lock()
	take := b.take
	b.takeMu.Unlock()
	if take == nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(take, cancel)
	return c, func() { stop(); cancel() }
}

// decision is what resolve made of a request.
type decision struct {
	// last is the sequence to append build_started after (0: nothing to
	// build; the request was dropped, deferred or reported).
	last uint64
	// startedSeq is set when this holder already recorded the start (a
	// retried handler): build without appending it again.
	startedSeq uint64
}

// heldElsewhere says another holder, alive, holds the attempt a request
// is for. The request is kept, never acked: it may be that holder's own
// message (redelivered to us when its acks were late), and once acked
// nothing would deliver it again if that holder then died for good.
type heldElsewhere struct {
	holder string
	lease  time.Duration
	// late: the holder's heartbeat is late but its lease has not passed;
	// wait is how long until it has.
	late bool
	wait time.Duration
}

func (e *heldElsewhere) Error() string {
	if e.late {
		return fmt.Sprintf("held by %s, late (its lease passes in %v)", e.holder, e.wait.Round(time.Millisecond))
	}
	return "held by " + e.holder + ", alive"
}

// watchInterval is how often a kept copy asks again whether its holder's
// attempt ended or its holder is gone: a sixth of the lease, as the
// holder's heartbeats, within [1 s, 5 s].
func watchInterval(lease time.Duration) time.Duration {
	return min(max(lease/6, time.Second), 5*time.Second)
}

func (b *build) handle(ctx context.Context, m jetstream.Msg) error {
	req := &workv1.BuildRequest{}
	if err := eventlog.DecodeWork(m.Data(), req); err != nil {
		return worker.Permanent(fmt.Errorf("decode build request %s: %w", m.Subject(), err))
	}
	log := b.log.With().Str("drv", req.GetDrvId()).Str("drv_path", req.GetDrvPath()).Uint32("attempt", req.GetAttempt()).Logger()
	// A copy, or the request redelivered while this life handles it: kept
	// (with the worker's heartbeats) until that handling ends, then decided
	// afresh. Acked now, it would be lost if that handling then failed
	// and was to be retried.
	copied := false
	for {
		ok, done := b.hold(req)
		if ok {
			break
		}
		if !copied {
			log.Info().Msg("copy of a request this builder is handling kept until that handling ends")
			copied = true
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer b.release(req)
	// A redelivery or a copy is decided from the history before anything
	// is built; a first delivery goes by the sequence it carries.
	resolveFirst := copied
	if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
		resolveFirst = true
	}
	// mayHold: this handling recorded, or tried to record, this holder's
	// start of the attempt (an append whose ack was lost may have landed).
	// Once the log may name this holder, the request is never handed back
	// on a transient error: another builder given it would keep it as a
	// copy of an attempt a live holder holds (see below), waiting for an
	// end this holder, no longer handling it, would never bring.
	var mayHold atomic.Bool // set by the start, which may run on the log reader's goroutine
	tries := 0
	for watched := false; ; {
		err := b.handleHeld(ctx, m, req, resolveFirst, &mayHold, log)
		var held *heldElsewhere
		if !errors.As(err, &held) {
			if err == nil || !mayHold.Load() || ctx.Err() != nil || errors.Is(err, worker.ErrPermanent) {
				return err
			}
			if tries++; tries >= maxHolderTries {
				// Given up (an infrastructure interruption recorded by the
				// give-up path, as this holder), never handed back.
				return worker.Permanent(fmt.Errorf("%d tries as this attempt's holder: %w", tries, err))
			}
			wait := holderRetryWait(tries)
			log.Warn().Err(err).Dur("retry_in", wait).Int("try", tries).Msg("this builder may hold the attempt: request kept and tried again here")
			if err := sleep(ctx, wait); err != nil {
				return err
			}
			resolveFirst = true
			continue
		}
		if held.late {
			// Its heartbeat is late but its lease has not passed: ask again
			// once it has (a wait that ends, so a redelivery of its own).
			log.Info().Str("held_by", held.holder).Dur("retry_in", held.wait).Msg("the builder holding this attempt is late; asking again after its lease")
			return worker.RetryAfter(held.wait+time.Second, err)
		}
		// Alive: keep the request, with heartbeats, until that holder's
		// attempt ends (then it is stale and acked) or the holder is gone
		// (then its death is reported). Put back instead, it would be
		// delivered again every few seconds for as long as the build runs,
		// and given up after MaxDeliver deliveries.
		if !watched {
			log.Info().Str("held_by", held.holder).Msg("copy of a request for an attempt a live builder holds kept until that attempt ends or its holder is gone")
			watched = true
		}
		if err := sleep(ctx, watchInterval(held.lease)); err != nil {
			return err
		}
		resolveFirst = true
	}
}

// sleep waits d, or until ctx ends (its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxHolderTries bounds how often a handling that may hold its attempt
// tries again before giving the request up (holderRetryWait apart: about
// 90 s, longer than a NATS leader election or a node's restart).
const maxHolderTries = 20

// holderRetryWait is the wait before try n (1-based): 0.5 s doubling, at
// most 5 s.
func holderRetryWait(n int) time.Duration {
	return min(500*time.Millisecond<<min(n-1, 4), 5*time.Second)
}

func (b *build) handleHeld(ctx context.Context, m jetstream.Msg, req *workv1.BuildRequest, resolveFirst bool, mayHold *atomic.Bool, log zerolog.Logger) error {
	// The common case needs no read: the request carries the sequence the
	// derivation was routed at. Only when the history may have moved on (a
	// redelivery, a copy, a builder that died) is it read and decided.
	d := decision{last: req.GetLastSeq()}
	if resolveFirst {
		d.last = 0
	}
	if d.last == 0 {
		var err error
		if d, err = b.resolve(ctx, m, req, log); err != nil || (d.last == 0 && d.startedSeq == 0) {
			return err
		}
		if d.startedSeq != 0 {
			mayHold.Store(true)
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
	// build_started is recorded when Nix starts building the derivation
	// (its build activity begins), not when the request is taken or while
	// it waits in a batch; a derivation Nix does not build (valid already,
	// .drv gone) is recorded as started just before its report.
	st := &starter{seq: d.startedSeq, start: func(ctx context.Context) (uint64, error) {
		mayHold.Store(true)
		return b.start(ctx, m, req, d.last, log)
	}}

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
		startedSeq, err := st.wait(ctx)
		if startedSeq == 0 {
			return err
		}
		rep := &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED, StartedSeq: startedSeq}
		if b.cfg.Noop.Fail != nil && b.cfg.Noop.Fail(req.GetDrvId(), req.GetAttempt()) {
			rep.Outcome, rep.ExitCode, rep.LogTail = workv1.BuildOutcome_BUILD_OUTCOME_FAILED, 100, "no-op builder: failure chosen by the benchmark"
		}
		return b.reportUntilStored(ctx, req, rep, log)
	}

	if err := b.fetch(ctx, req.GetDrvPath()); err != nil {
		return fmt.Errorf("build %s: %w", req.GetDrvPath(), err) // retried
	}

	liveSubject := eventlog.LogSubject(req.GetDrvId(), req.GetAttempt())
	opts := b.nixOptions()
	job := nixbuild.Job{
		DrvPath: req.GetDrvPath(),
		LogPath: filepath.Join(b.cfg.BuildLogDir, req.GetDrvId(), fmt.Sprintf("%d.log.zst", req.GetAttempt())),
		OnLine: func(line []byte) {
			if b.cfg.Conn != nil {
				_ = b.cfg.Conn.Publish(liveSubject, line)
			}
		},
		OnStart: func() { st.async(context.WithoutCancel(ctx)) },
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
	var err error
	if b.batch != nil {
		// A request waiting in a batch has been taken but not begun: a
		// drain leaves it out (unless this holder may have recorded its
		// start: then it is ours to build) and hands it back below.
		taken, cancelTaken := ctx, func() {}
		if !mayHold.Load() {
			taken, cancelTaken = b.untilDrained(ctx)
		}
		res, err = b.batch.build(bctx, taken, job)
		drained := taken.Err() != nil && ctx.Err() == nil
		cancelTaken()
		if err != nil && drained && !mayHold.Load() {
			return worker.RetryAfter(0, fmt.Errorf("build %s: the builder was drained before it began: handed back for another", req.GetDrvPath()))
		}
	} else if ctx.Err() == nil {
		res, err = b.realise(bctx, job, opts)
	} else {
		err = ctx.Err()
	}
	if err != nil {
		// Retried: here, as this attempt's holder, once its start may be
		// recorded (see handle); handed back if not, and the give-up path
		// records a start and an interruption when the tries run out.
		return fmt.Errorf("build %s: %w", req.GetDrvPath(), err)
	}
	if !res.Started && res.Outcome == nixbuild.Interrupted && res.Interruption == nixbuild.Cancelled && ctx.Err() != nil {
		// Stopped by our shutdown before Nix built it: it stays Buildable
		// and is built after the restart, with no death to report.
		return ctx.Err()
	}
	startedSeq, err := st.wait(context.WithoutCancel(ctx))
	if startedSeq == 0 {
		// Not ours after all (stale, or another builder holds it): its
		// outcome is not reported; or recording the start failed, and the
		// request is retried.
		return err
	}
	rep := &workv1.BuildReport{
		ExitCode: int32(res.ExitCode), LogTail: res.Tail, DurationMs: res.Duration.Milliseconds(), LogPath: res.LogPath,
		StartedSeq: startedSeq, Holder: b.holders.id,
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
	if rep.GetOutcome() == workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED {
		// Before the report: the report lets dependents be built, maybe
		// by a builder that substitutes this output from the cache.
		b.push(bctx, req.GetDrvPath(), log)
	}
	rep.LogTail = nixbuild.TailBytes(rep.LogTail, maxReportTail)
	outcome := strings.ToLower(strings.TrimPrefix(rep.GetOutcome().String(), "BUILD_OUTCOME_"))
	if m := b.cfg.Metrics; m != nil {
		m.BuildsFinished.WithLabelValues(outcome).Inc()
		m.BuildDuration.WithLabelValues(outcome).Observe(res.Duration.Seconds())
	}
	log.Info().Str("outcome", outcome).Stringer("interruption", res.Interruption).Dur("took", res.Duration).
		Int("invocations", res.Invocations).Msg("build finished")
	return b.reportUntilStored(ctx, req, rep, log)
}

// starter records build_started once: when Nix starts the build (async,
// from the log reader, which must not wait), or at the latest before the
// report (wait).
type starter struct {
	start func(ctx context.Context) (uint64, error)

	mu   sync.Mutex
	done chan struct{} // closed once the start is recorded or refused
	seq  uint64        // where it landed; 0: not ours
	err  error
}

func (s *starter) async(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil || s.seq != 0 {
		return
	}
	s.done = make(chan struct{})
	go func() {
		seq, err := s.start(ctx)
		s.mu.Lock()
		s.seq, s.err = seq, err
		close(s.done)
		s.mu.Unlock()
	}()
}

// wait returns where build_started landed, recording it now if Nix never
// started the build.
func (s *starter) wait(ctx context.Context) (uint64, error) {
	s.mu.Lock()
	if s.seq != 0 && s.done == nil {
		seq := s.seq
		s.mu.Unlock()
		return seq, nil // started by this holder before (a retried handler)
	}
	s.mu.Unlock()
	s.async(ctx)
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, s.err
}

// realise is one derivation alone (no batching).
func (b *build) realise(ctx context.Context, job nixbuild.Job, opts nixbuild.Options) (nixbuild.Result, error) {
	res, err := nixbuild.Realise(ctx, []nixbuild.Job{job}, opts)
	if err != nil {
		return nixbuild.Result{}, err
	}
	return res[0], nil
}

// start appends build_started for this holder after last. It returns the
// sequence it landed at, or 0 when the request turned out to be one not
// to build (dropped, deferred or reported by resolve).
func (b *build) start(ctx context.Context, m jetstream.Msg, req *workv1.BuildRequest, last uint64, log zerolog.Logger) (uint64, error) {
	started := &eventsv1.Event{
		// The holder is in the id: another holder's start of the same
		// attempt is then no duplicate (which would read as success) but
		// a conflict, and resolve sees who holds it.
		Id: eventlog.StartedID(req.GetDrvId(), req.GetAttempt(), b.holders.id),
		Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{
			Attempt: req.GetAttempt(), Builder: b.cfg.Name, Holder: b.holders.id,
			LeaseSeconds: uint32(b.cfg.Lease / time.Second),
		}},
	}
	a, err := b.cfg.Events.Append(ctx, req.GetDrvId(), started, eventlog.ExpectLast(last))
	if errors.Is(err, eventlog.ErrConflict) {
		d, err := b.resolve(ctx, m, req, log)
		if err != nil || d.startedSeq != 0 || d.last == 0 {
			return d.startedSeq, err
		}
		a, err = b.cfg.Events.Append(ctx, req.GetDrvId(), started, eventlog.ExpectLast(d.last))
		if err != nil {
			return 0, err
		}
	} else if err != nil {
		return 0, err
	}
	log.Info().Msg("build started")
	return a.Seq, nil
}

// startedOf returns the record of the start of attempt in history.
func startedOf(history []eventlog.Record, attempt uint32) (eventlog.Record, *eventsv1.DrvBuildStarted) {
	for i := len(history) - 1; i >= 0; i-- {
		if s := history[i].Event.GetDrvBuildStarted(); s != nil && s.GetAttempt() == attempt {
			return history[i], s
		}
	}
	return eventlog.Record{}, nil
}

// resolve reads the derivation's history and decides what a request means
// now: build it (after decision.last), go on building it as its holder
// (decision.startedSeq), or nothing: stale (dropped), held by a holder
// that is gone (its death reported), or held by another holder that is
// alive or late (a *heldElsewhere error: the request is kept, see handle).
func (b *build) resolve(ctx context.Context, m jetstream.Msg, req *workv1.BuildRequest, log zerolog.Logger) (decision, error) {
	history, last, err := b.cfg.Events.Load(ctx, eventlog.Drv, req.GetDrvId())
	if err != nil {
		return decision{}, err
	}
	if last < req.GetLastSeq() {
		// The request was routed at LastSeq, a fact on this derivation's
		// own subject: a history that ends before it was read from a
		// replica that has not applied it yet (on an R3 stream a read's
		// ordered consumer may sit on a follower), not one that moved on.
		// Read again later: dropped as stale, the derivation would stay
		// Buildable with no request (make bench-mesh lost 2 and 3 of
		// 100,000 so, each read back as queued).
		return decision{}, fmt.Errorf("history of %s read up to %d, before the request's %d: a replica behind the log; read again", req.GetDrvId(), last, req.GetLastSeq())
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, h := range history {
		evs[i] = h.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil {
		return decision{}, worker.Permanent(fmt.Errorf("fold %s: %w", req.GetDrvId(), err))
	}
	switch {
	case cur.State == buildstate.Buildable && cur.Attempt == req.GetAttempt():
		return decision{last: last}, nil
	case cur.State != buildstate.Building || cur.Attempt != req.GetAttempt():
		log.Info().Stringer("state", cur.State).Msg("stale build request dropped")
		return decision{}, nil
	}
	rec, st := startedOf(history, req.GetAttempt())
	holder := st.GetHolder()
	if holder == b.holders.id {
		// This life started it and its handler failed since (and is being
		// retried): go on as its holder.
		return decision{startedSeq: rec.Seq}, nil
	}
	live, wait, err := b.holders.check(ctx, holder, time.Duration(st.GetLeaseSeconds())*time.Second)
	if err != nil {
		return decision{}, err
	}
	switch live {
	case alive:
		return decision{}, &heldElsewhere{holder: holder, lease: time.Duration(st.GetLeaseSeconds()) * time.Second}
	case suspect:
		return decision{}, &heldElsewhere{holder: holder, lease: time.Duration(st.GetLeaseSeconds()) * time.Second, late: true, wait: wait}
	}
	log.Warn().Str("held_by", holder).Msg("the builder holding this attempt is gone; reporting process death")
	rep := &workv1.BuildReport{
		Outcome: workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED, ExitCode: -1,
		Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH,
		LogTail:      fmt.Sprintf("stopped: the builder holding this attempt (%s, %s) stopped before reporting", st.GetBuilder(), holder),
		StartedSeq:   last,
	}
	// A message id of its own: a real outcome and a report of death must
	// never drop one another as duplicates.
	return decision{}, b.publish(ctx, req, rep, eventlog.DeathReportID(req.GetDrvId(), req.GetAttempt(), holder))
}

// giveUp records a terminal fact for a request the worker stops handling
// (refused as permanent, or failed on its last delivery), so the
// derivation never stays Building (or Buildable) with nothing to move it:
// an infrastructure interruption with the error, after recording this
// holder's start if nobody started the attempt.
func (b *build) giveUp(ctx context.Context, m jetstream.Msg, cause error) error {
	req := &workv1.BuildRequest{}
	if err := eventlog.DecodeWork(m.Data(), req); err != nil || req.GetDrvId() == "" {
		b.log.Error().Err(cause).Str("subject", m.Subject()).Msg("a build request that cannot be read was given up; nothing to record")
		return nil
	}
	log := b.log.With().Str("drv", req.GetDrvId()).Str("drv_path", req.GetDrvPath()).Uint32("attempt", req.GetAttempt()).Logger()
	history, last, err := b.cfg.Events.Load(ctx, eventlog.Drv, req.GetDrvId())
	if err != nil {
		return err
	}
	evs := make([]*eventsv1.Event, len(history))
	for i, h := range history {
		evs[i] = h.Event
	}
	cur, err := buildstate.Fold(evs)
	if err != nil || cur.Attempt != req.GetAttempt() {
		return nil // nothing of this attempt to settle
	}
	switch cur.State {
	case buildstate.Buildable:
		if last, err = b.start(ctx, m, req, last, log); err != nil || last == 0 {
			return err
		}
	case buildstate.Building:
	default:
		return nil
	}
	rep := &workv1.BuildReport{
		Outcome: workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED, ExitCode: -1,
		Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE,
		LogTail:      nixbuild.TailBytes("stopped: the builder gave up on this request: "+cause.Error()+"; not a build failure", maxReportTail),
		StartedSeq:   last, Holder: b.holders.id,
	}
	log.Error().Err(cause).Msg("build request given up; reported as an infrastructure interruption")
	return b.publish(ctx, req, rep, eventlog.GaveUpReportID(req.GetDrvId(), req.GetAttempt()))
}

// reportUntilStored reports this holder's outcome, trying again until the
// report is stored or the builder stops. Once the attempt started, only
// its holder can report it: a copy of the request delivered to another
// builder waits while this holder lives (see handle). Handed back on a
// failed publish (a NATS node lost, a leader moving), the request would be
// such a copy, waiting for a holder that no longer has it, and the attempt
// would never end. The report's message id makes every try one report.
// On a stop the request goes back; this holder gone, its death is
// reported and the attempt built again.
func (b *build) reportUntilStored(ctx context.Context, req *workv1.BuildRequest, rep *workv1.BuildReport, log zerolog.Logger) error {
	wait := 500 * time.Millisecond
	for {
		err := b.report(context.WithoutCancel(ctx), req, rep)
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("report not stored; trying again")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// report publishes a builder's own outcome of an attempt.
func (b *build) report(ctx context.Context, req *workv1.BuildRequest, rep *workv1.BuildReport) error {
	rep.Holder = b.holders.id
	return b.publish(ctx, req, rep, eventlog.ReportID(req.GetDrvId(), req.GetAttempt()))
}

func (b *build) publish(ctx context.Context, req *workv1.BuildRequest, rep *workv1.BuildReport, msgID string) error {
	rep.DrvId, rep.DrvPath, rep.Attempt, rep.Builder = req.GetDrvId(), req.GetDrvPath(), req.GetAttempt(), b.cfg.Name
	_, err := eventlog.Publish(ctx, b.cfg.Events.JetStream(), eventlog.ReportSubject(req.GetDrvId()), msgID, rep)
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
	case nixbuild.Infrastructure:
		return eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE
	default:
		return eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH
	}
}
