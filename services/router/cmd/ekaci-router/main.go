// Command ekaci-router is the router stage on its own, for a mesh: it puts
// each buildable derivation on the queue of a builder pool that can take it.
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/router"
)

func main() {
	fs := flag.NewFlagSet("ekaci-router", flag.ContinueOnError)
	systems := flagenv.List{service.CurrentSystem()}
	var features flagenv.List
	fs.Var(&systems, "systems", "comma-separated systems the builder pools serve")
	fs.Var(&features, "features", "comma-separated system features the builders offer")
	maxJobs := fs.Int("max-jobs", 2, "builds the local pool runs at once")
	fodMaxJobs := fs.Int("fod-max-jobs", 1, "builds the fixed-output pool runs at once (0: no fixed-output pool; they build on the local pool)")
	machinesFile := fs.String("machines", "", "a Nix machines file of remote builders")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		topo := machines.Topology{Systems: systems, Features: features, MaxJobs: *maxJobs, FODMaxJobs: *fodMaxJobs}
		var health *machines.Health
		if *machinesFile != "" {
			ms, err := machines.ReadFile(*machinesFile)
			if err != nil {
				return err
			}
			topo.Remote = ms
			health = machines.NewHealth(ms, nil, 30*time.Second, env.Logger)
		}
		ctx, stop := context.WithCancel(ctx)
		g, ctx := errgroup.WithContext(ctx)
		if health != nil {
			g.Go(func() error { health.Run(ctx); return nil })
		}
		g.Go(func() error {
			defer stop()
			return router.Run(ctx, router.Config{Events: env.Events, Logger: env.Logger, Routes: topo.Routes(), Health: health, Metrics: env.Metrics})
		})
		return g.Wait()
	}))
}
