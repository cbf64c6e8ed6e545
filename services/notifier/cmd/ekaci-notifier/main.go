// Command ekaci-notifier is the notifier stage on its own, for a mesh: it
// writes a line per concluded jobset and change to stdout.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/notifier"
)

func main() {
	fs := flag.NewFlagSet("ekaci-notifier", flag.ContinueOnError)
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		return notifier.Run(ctx, notifier.Config{Events: env.Events, Logger: env.Logger, Sink: notifier.NewLocal(os.Stdout)})
	}))
}
