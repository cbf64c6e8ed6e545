// Package benchmesh runs the schedule benchmark of package bench through
// the mesh: a three-node JetStream cluster of R3 streams (deploy/nats, as
// nats-server processes on loopback) with ingress, router, a no-op builder
// and the recorder each a process of its own, next to that cluster's own
// ceiling measured in the same run (make bench-mesh).
package benchmesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/services/ekaci/internal/bench"
)

// Replicas of every stream: the cluster's three nodes.
const Replicas = 3

// Systems the generated graph uses, and so the pools served.
var Systems = []string{"x86_64-linux", "aarch64-linux"}

// Stages are the stage binaries a run starts, one process each.
var Stages = []string{"ingress", "router", "builder", "recorder"}

// Config of a run.
type Config struct {
	// Bin holds nats-server and ekaci-<stage> for each of Stages.
	Bin string
	// NATSConf holds the cluster's nats-*.conf (deploy/nats).
	NATSConf string
	// Dir holds the nodes' stores, the stages' data and every process's
	// log.
	Dir string
	// N derivations of a graphgen graph of seed Seed.
	N    int
	Seed uint64
	// CeilingN messages for the ceiling (0: none measured).
	CeilingN int
	// Check, when set, runs once every derivation succeeded, with the
	// mesh still up: the tests' correctness checks.
	Check func(ctx context.Context, p *bench.Pipeline, g *graphgen.Graph) error
	// Progress, when set, receives a line at each step.
	Progress func(format string, args ...any)
}

// Result is what a run measured.
type Result struct {
	N     int
	Edges int
	// Seconds from the first discovery appended until every derivation's
	// build_succeeded was; Rate is N over it.
	Seconds float64
	Rate    float64
	// MsgsPerDrv is the events appended per derivation plus its build
	// request and report (as make bench counts).
	MsgsPerDrv float64
	// CeilingRate is the ceiling in msg/s; CeilingDrvRate that over
	// MsgsPerDrv; Ratio is Rate over CeilingDrvRate.
	CeilingN, CeilingRate, CeilingDrvRate, Ratio float64
	// MeanData and MeanHeader are the sampled events' mean sizes in bytes
	// (the ceiling's messages are copies of them).
	MeanData, MeanHeader float64
	// Load is the 1-minute load average before the schedule, after it,
	// and after the ceiling.
	LoadBefore, LoadAfterSchedule, LoadAfterCeiling float64
	// CPU is the CPU seconds each process used during the schedule
	// ("bench" is this process: discovery and the counters).
	CPU map[string]float64
	// StartSeconds is how long after the stages started all of them had
	// a pull waiting (not part of Seconds).
	StartSeconds float64
	// NATSVersion is what the nodes' nats-server says it is.
	NATSVersion string
}

// Run starts the cluster and the stages, moves a generated graph of N
// derivations from discovery to all Completed(Success), then measures the
// ceiling on the same cluster, and stops everything.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	say := cfg.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	// A process that exits on its own ends the run with its log's end.
	exited := func(err error) { fail(err) }

	say("starting the 3-node cluster from %s", cfg.NATSConf)
	cl, err := startCluster(ctx, filepath.Join(cfg.Bin, "nats-server"), cfg.NATSConf, cfg.Dir, exited)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, cl.stop()) }()
	res.NATSVersion = cl.version

	streams := eventlog.StreamOptions{Replicas: Replicas}
	p, err := bench.Attach(ctx, cl.URL(), streams)
	if err != nil {
		return res, err
	}
	defer p.Close()

	say("starting %s", strings.Join(Stages, ", "))
	procs, err := startStages(cfg, cl.URL(), exited)
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			err = errors.Join(err, procs[i].stop(30*time.Second))
		}
	}()
	if err != nil {
		return res, err
	}
	started := time.Now()
	idle, err := waitConsumers(ctx, p.Events.JetStream())
	if err != nil {
		return res, err
	}
	res.StartSeconds = time.Since(started).Seconds()
	say("the stages pull (%.1f s after they started; the last without a pull waiting: %v)", res.StartSeconds, idle)

	g := graphgen.Generate(graphgen.Params{N: cfg.N, Seed: cfg.Seed})
	res.N, res.Edges = cfg.N, g.Stats().Edges
	all := append(append([]*proc(nil), cl.nodes...), procs...)
	cpu0 := cpuOf(all)
	res.LoadBefore = loadAvg()
	say("schedule: %d derivations, %d edges (load %.2f)", res.N, res.Edges, res.LoadBefore)
	start := time.Now()
	pctx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go progress(pctx, p, start, say, fail)
	if _, err := p.Discover(ctx, g); err != nil {
		return res, fmt.Errorf("discover: %w", err)
	}
	if err := p.WaitCount(ctx, "build_succeeded", int64(cfg.N)); err != nil {
		return res, fmt.Errorf("schedule: %w (cause: %v)", err, context.Cause(ctx))
	}
	res.Seconds = time.Since(start).Seconds()
	stopProgress()
	res.Rate = float64(cfg.N) / res.Seconds
	res.LoadAfterSchedule = loadAvg()
	res.CPU = map[string]float64{}
	for name, c := range cpuOf(all) {
		res.CPU[name] = c - cpu0[name]
	}
	say("schedule: %.1f s, %.0f drv/s (load %.2f)", res.Seconds, res.Rate, res.LoadAfterSchedule)
	seq, err := p.Events.LastSeq(ctx)
	if err != nil {
		return res, err
	}
	res.MsgsPerDrv = float64(int64(seq)+2*int64(cfg.N)) / float64(cfg.N)

	if cfg.Check != nil {
		if err := cfg.Check(ctx, p, g); err != nil {
			return res, err
		}
	}
	if cfg.CeilingN <= 0 {
		return res, nil
	}
	samples, err := sampleEvents(ctx, p.Events.JetStream(), 1000)
	if err != nil {
		return res, err
	}
	res.MeanData, res.MeanHeader = meanSizes(samples)
	// The stages are idle but stopped, so the ceiling has the cores the
	// schedule had.
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(30 * time.Second); err != nil {
			return res, err
		}
	}
	say("ceiling: %d messages (mean payload %.0f B, headers %.0f B)", cfg.CeilingN, res.MeanData, res.MeanHeader)
	res.CeilingN = float64(cfg.CeilingN)
	if res.CeilingRate, err = ceiling(ctx, cl.URL(), Replicas, cfg.CeilingN, samples); err != nil {
		return res, err
	}
	res.LoadAfterCeiling = loadAvg()
	res.CeilingDrvRate = res.CeilingRate / res.MsgsPerDrv
	res.Ratio = res.Rate / res.CeilingDrvRate
	say("ceiling: %.0f msg/s (load %.2f)", res.CeilingRate, res.LoadAfterCeiling)
	return res, nil
}

// stallAfter is how long the log may stand still before the run gives up
// as stalled: the no-op builder reports within milliseconds, so a log that
// has not grown for this long is stuck, and the consumers' state says
// where.
const stallAfter = time.Minute

// progress says every 10 s how far the schedule is, until ctx ends; a log
// that stood still for stallAfter fails the run with every consumer's
// state.
func progress(ctx context.Context, p *bench.Pipeline, start time.Time, say func(string, ...any), fail func(error)) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var last uint64
	moved := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			seq, _ := p.Events.LastSeq(ctx)
			say("  %3.0f s: log at %d, %d buildable, %d succeeded (load %.2f)", time.Since(start).Seconds(), seq,
				p.Count("buildable"), p.Count("build_succeeded"), loadAvg())
			if seq != last {
				last, moved = seq, time.Now()
			} else if time.Since(moved) >= stallAfter {
				fail(fmt.Errorf("stalled: the log stood at %d for %v; consumers: %s", seq, stallAfter, consumers(ctx, p.Events.JetStream())))
				return
			}
		}
	}
}

// consumers describes every consumer of ekaci's event and work streams.
func consumers(ctx context.Context, js jetstream.JetStream) string {
	var b strings.Builder
	for _, name := range []string{eventlog.EventsStream, eventlog.WorkStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v; ", name, err)
			continue
		}
		l := s.ListConsumers(ctx)
		for c := range l.Info() {
			filters := c.Config.FilterSubjects
			if c.Config.FilterSubject != "" {
				filters = append(filters, c.Config.FilterSubject)
			}
			fmt.Fprintf(&b, "%s/%s (filters %v): delivered %d, ack floor %d, %d pending, %d unacknowledged, %d waiting pulls; ",
				name, c.Name, filters, c.Delivered.Stream, c.AckFloor.Stream,
				c.NumPending, c.NumAckPending, c.NumWaiting)
		}
		if err := l.Err(); err != nil {
			fmt.Fprintf(&b, "%s: %v; ", name, err)
		}
	}
	return b.String()
}

// startStages starts every stage binary against url with the streams at
// Replicas and the pools the bench's in-process pipeline serves.
func startStages(cfg Config, url string, exited func(error)) ([]*proc, error) {
	common := []string{"--nats-url", url, "--stream-replicas", fmt.Sprint(Replicas), "--http-addr", "",
		"--log-level", "warn", "--log-format", "json", "--connect-timeout", "2m"}
	pools := []string{"--systems", strings.Join(Systems, ","), "--max-jobs", "64", "--fod-max-jobs", "16"}
	dir := func(parts ...string) string { return filepath.Join(append([]string{cfg.Dir}, parts...)...) }
	args := map[string][]string{
		"ingress":  {"--data-dir", dir("ingress")},
		"router":   pools,
		"builder":  append([]string{"--noop", "--name", "noop", "--log-dir", dir("builder", "logs"), "--state-dir", dir("builder", "state")}, pools...),
		"recorder": {"--data-dir", dir("recorder")},
	}
	var procs []*proc
	for _, st := range Stages {
		name := "ekaci-" + st
		p, err := start(cfg.Dir, name, filepath.Join(cfg.Bin, name), append(append([]string(nil), common...), args[st]...), exited)
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// waitConsumers waits until the router's, the builder pools' and the
// recorder's durable consumers exist, each with a pull request waiting on
// the server: the stages are consuming. (A pull that reaches a consumer
// before its R3 group is ready is lost, and the stage pulls again only
// once its heartbeats are missed: ~30 s that are not the schedule's.
// Ingress and the recorder's read model fold from the log's start, so
// what they have not read yet waits for them either way.)
// It returns the consumers found without a pull the last time any was.
func waitConsumers(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	want := map[string][]string{eventlog.EventsStream: {eventlog.RouterDurable}, eventlog.WorkStream: {eventlog.RecorderReportsDurable}}
	for _, pool := range (machines.Topology{Systems: Systems, MaxJobs: 64, FODMaxJobs: 16}).Pools() {
		want[eventlog.WorkStream] = append(want[eventlog.WorkStream], eventlog.BuilderDurable(pool.System, pool.Class))
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var idle []string
	err := poll(wctx, "the stages' consumers", 100*time.Millisecond, func() (bool, error) {
		var missing []string
		for stream, names := range want {
			for _, name := range names {
				cctx, cancel := context.WithTimeout(wctx, 5*time.Second)
				c, err := js.Consumer(cctx, stream, name)
				cancel()
				if err != nil {
					return false, fmt.Errorf("%s on %s: %w", name, stream, err)
				}
				if c.CachedInfo().NumWaiting == 0 {
					missing = append(missing, name)
				}
			}
		}
		if len(missing) > 0 {
			idle = missing
			return false, fmt.Errorf("no pull waiting on %v", missing)
		}
		return true, nil
	})
	return idle, err
}

// cpuOf is the CPU seconds each process used so far, this one as "bench".
func cpuOf(procs []*proc) map[string]float64 {
	out := map[string]float64{"bench": selfCPU()}
	for _, p := range procs {
		out[p.name] = p.cpuSeconds()
	}
	return out
}

// selfCPU is this process's CPU time in seconds.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	return statCPU(b)
}
