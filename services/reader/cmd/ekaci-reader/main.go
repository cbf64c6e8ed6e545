// Command ekaci-reader is the reader stage on its own, for a mesh: it reads
// each checkout's .ekaci/config.json and creates its jobsets.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/reader"
)

func main() {
	fs := flag.NewFlagSet("ekaci-reader", flag.ContinueOnError)
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		return reader.Run(ctx, reader.Config{Events: env.Events, Logger: env.Logger, Metrics: env.Metrics})
	}))
}
