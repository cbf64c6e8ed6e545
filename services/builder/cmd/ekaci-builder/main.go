// Command ekaci-builder is a builder on its own: on any machine with Nix and
// a route to NATS, it pulls the builds of the systems it serves.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/logretention"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/builder"
)

func main() {
	fs := flag.NewFlagSet("ekaci-builder", flag.ContinueOnError)
	host, _ := os.Hostname()
	name := fs.String("name", host, "this builder's name, recorded on each build attempt")
	systems := flagenv.List{service.CurrentSystem()}
	var nixOpts flagenv.Pairs
	fs.Var(&systems, "systems", "comma-separated systems this builder serves")
	fs.Var(&nixOpts, "nix-option", "a Nix option for every build, name=value (repeatable)")
	maxJobs := fs.Int("max-jobs", 2, "builds run at once")
	fodMaxJobs := fs.Int("fod-max-jobs", 1, "fixed-output builds run at once (0: serve no FOD pool)")
	noOutput := fs.Duration("no-output-timeout", time.Hour, "stop a build that prints nothing for this long")
	total := fs.Duration("total-timeout", 0, "stop a build that runs longer than this (0: no limit)")
	logDir := fs.String("log-dir", "/var/lib/ekaci/logs", "where each attempt's compressed log is kept")
	logMaxAge := fs.Duration("log-max-age", logretention.DefaultMaxAge, "delete logs under --log-dir last written longer ago than this")
	logMaxMiB := fs.Int64("log-max-mib", logretention.DefaultMaxBytes>>20, "bound the logs under --log-dir to this many MiB, deleting the oldest first (logs being written are never deleted)")
	noBatch := fs.Bool("no-batch", false, "one nix-build per derivation, instead of one per lane for the ready derivations of a pool")
	maxLogBytes := fs.Int64("max-log-bytes", 256<<20, "cap each build attempt's log at this many bytes; past it a notice is written and the build goes on (-1: no cap)")
	stateDir := fs.String("state-dir", "/var/lib/ekaci/builder", "what outlives one life of this builder (locked while it runs): files naming its running Nix processes, ended at the next start, its holder id, and GC roots of the outputs it found valid, kept until the jobsets open meanwhile concluded")
	lease := fs.Duration("lease", builder.DefaultLease, "how long after this builder's last heartbeat its running attempts count as abandoned")
	cacheURL := fs.String("cache", "", "the mesh's binary cache (ekaci-cache, e.g. http://cache:8081): each .drv closure is fetched from it and each success's outputs pushed to it, for a builder with a Nix store of its own (empty: the store is shared with the evaluator)")
	var pushTo flagenv.List
	fs.Var(&pushTo, "push-to", "comma-separated Nix store URLs of upstream caches each success's outputs are pushed to (e.g. s3://bucket?region=eu-west-1)")
	machinesFile := fs.String("machines", "", "a Nix machines file: also serve the remote pools of their systems, building through them")
	noop := fs.Bool("noop", false, "BENCHMARKS ONLY (make bench-mesh): build nothing and report every build as succeeded at once; never set it on a real builder")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		topo := machines.Topology{Systems: systems, MaxJobs: *maxJobs, FODMaxJobs: *fodMaxJobs}
		var health *machines.Health
		if *machinesFile != "" {
			ms, err := machines.ReadFile(*machinesFile)
			if err != nil {
				return err
			}
			topo.Remote = ms
			health = machines.NewHealth(ms, nil, 30*time.Second, env.Logger)
		}
		if *logMaxAge <= 0 || *logMaxMiB <= 0 {
			return fmt.Errorf("--log-max-age %v, --log-max-mib %d: want both above 0", *logMaxAge, *logMaxMiB)
		}
		// The health checker and the log pruner run as long as the
		// builder does; Main returns once all three have.
		ctx, stop := context.WithCancel(ctx)
		g, ctx := errgroup.WithContext(ctx)
		if health != nil {
			g.Go(func() error { health.Run(ctx); return nil })
		}
		// Logs are pruned in this process, the one writing them: it sees
		// which are open (see logretention).
		g.Go(func() error {
			_ = logretention.New(logretention.Config{Dir: *logDir, MaxAge: *logMaxAge, MaxBytes: *logMaxMiB << 20, Logger: env.Logger}).Run(ctx)
			return nil
		})
		var cache *builder.Cache
		if *cacheURL != "" {
			cache = &builder.Cache{URL: *cacheURL, NixOptions: nixOpts}
		}
		var upstream []builder.Cache
		for _, u := range pushTo {
			upstream = append(upstream, builder.Cache{URL: u, NixOptions: nixOpts})
		}
		var nop *builder.Noop
		if *noop {
			nop = &builder.Noop{}
		}
		g.Go(func() error {
			defer stop()
			return builder.Run(ctx, builder.Config{
				Noop:  nop,
				Cache: cache, PushTo: upstream,
				Events: env.Events, Conn: env.Conn, Logger: env.Logger, Name: *name, Pools: topo.Pools(),
				NixOptions: nixOpts, NoOutputTimeout: *noOutput, TotalTimeout: *total, BuildLogDir: *logDir, Metrics: env.Metrics, Health: health, NoBatch: *noBatch,
				AttemptLogMaxBytes: *maxLogBytes, StateDir: *stateDir, Lease: *lease,
			})
		})
		return g.Wait()
	}))
}
