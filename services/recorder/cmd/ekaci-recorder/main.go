// Command ekaci-recorder is the recorder stage on its own, for a mesh: it
// decides build outcomes and concludes jobsets and changes. Run one.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/recorder"
)

func main() {
	fs := flag.NewFlagSet("ekaci-recorder", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "/var/lib/ekaci", "holds recorder.db, the conclusions read model (rebuilt from the stream when deleted)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		unlock, err := service.Lock(*dataDir)
		if err != nil {
			return err
		}
		defer unlock()
		return recorder.Run(ctx, recorder.Config{Events: env.Events, DataDir: *dataDir, Logger: env.Logger, Metrics: env.Metrics})
	}))
}
