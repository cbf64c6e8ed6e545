// Command ekaci-evaluator is the evaluator stage on its own, for a mesh: it
// evaluates jobsets and records their derivation closures. It needs Nix and
// the gitter's checkouts at the same paths.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/binarycache"
	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/evaluator"
)

func main() {
	fs := flag.NewFlagSet("ekaci-evaluator", flag.ContinueOnError)
	var nixOpts flagenv.Pairs
	fs.Var(&nixOpts, "nix-option", "a Nix option for every evaluation, name=value (repeatable)")
	timeout := fs.Duration("eval-timeout", evaluator.DefaultEvalTimeout, "stop evaluating a job (head and base together) after this long; it fails saying so (0: no limit)")
	memMiB := fs.Int64("eval-memory-limit-mib", evaluator.DefaultEvalMemoryLimit>>20, "address-space limit of each Nix process evaluating a job, in MiB; over it the job fails saying so (0: no limit)")
	gcroots := fs.String("gcroots-dir", "", "keep GC roots of evaluated .drv files in DIR/<change id>/<jobset id>/ (the gitter's --gcroots-dir removes DIR/<change id> when the change concludes; empty: no roots)")
	cacheURL := fs.String("cache", "", "the mesh's binary cache (ekaci-cache, e.g. http://cache:8081): each job's .drv closure is pushed to it for builders with Nix stores of their own (empty: builders share this store)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		// The flags' 0 is no limit; Config's 0 is the default.
		cfg := evaluator.Config{Events: env.Events, Logger: env.Logger, NixOptions: nixOpts, Metrics: env.Metrics,
			GCRootsDir: *gcroots, EvalTimeout: -1, EvalMemoryLimit: -1}
		if *cacheURL != "" {
			cfg.Cache = &binarycache.Cache{URL: *cacheURL, NixOptions: nixOpts}
		}
		if *timeout > 0 {
			cfg.EvalTimeout = *timeout
		}
		if *memMiB > 0 {
			cfg.EvalMemoryLimit = *memMiB << 20
		}
		return evaluator.Run(ctx, cfg)
	}))
}
