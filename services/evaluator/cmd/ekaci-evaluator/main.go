// Command ekaci-evaluator is the evaluator stage on its own, for a mesh: it
// evaluates jobsets and records their derivation closures. It needs Nix and
// the gitter's checkouts at the same paths.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/evaluator"
)

func main() {
	fs := flag.NewFlagSet("ekaci-evaluator", flag.ContinueOnError)
	var nixOpts flagenv.Pairs
	fs.Var(&nixOpts, "nix-option", "a Nix option for every evaluation, name=value (repeatable)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		return evaluator.Run(ctx, evaluator.Config{Log: env.Log, Logger: env.Logger, NixOptions: nixOpts})
	}))
}
