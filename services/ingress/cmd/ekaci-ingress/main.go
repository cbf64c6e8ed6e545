// Command ekaci-ingress is the scheduler's first tier on its own, for a
// mesh: it keeps the dependency graph read model and marks derivations
// buildable. Run one.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/ingress"
)

func main() {
	fs := flag.NewFlagSet("ekaci-ingress", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "/var/lib/ekaci", "holds ingress.db, the graph read model (rebuilt from the stream when deleted)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		unlock, err := service.Lock(*dataDir)
		if err != nil {
			return err
		}
		defer unlock()
		return ingress.Run(ctx, ingress.Config{Events: env.Events, DataDir: *dataDir, Logger: env.Logger})
	}))
}
