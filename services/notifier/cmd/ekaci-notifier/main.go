// Command ekaci-notifier is the notifier stage on its own, for a mesh: it
// writes a line per concluded jobset and change to stdout and, with a
// GitHub App configured, answers on GitHub with check runs.
package main

import (
	"context"
	"flag"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/notifier"
	"github.com/ekaci/ekaci/services/notifier/checkrun"
)

func main() {
	fs := flag.NewFlagSet("ekaci-notifier", flag.ContinueOnError)
	gh := githubapp.AddFlags(fs)
	dataDir := fs.String("data-dir", service.DefaultDataDir(), "holds notifier-github.db, the check runs' read model")
	logURL := fs.String("github-log-url", "", "link to a derivation's full log in check runs: {drv} and {attempt} are replaced (empty: name the file on the server)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			return notifier.Run(ctx, notifier.Config{Events: env.Events, Logger: env.Logger, Sink: notifier.NewLocal(os.Stdout)})
		})
		if gh.Configured() {
			app, err := gh.App()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(*dataDir, 0o755); err != nil {
				return err
			}
			g.Go(func() error {
				return checkrun.Run(ctx, checkrun.Config{Events: env.Events, Logger: env.Logger.With().Str("component", "checkrun").Logger(),
					App: app, DataDir: *dataDir, LogURL: *logURL})
			})
		}
		return g.Wait()
	}))
}
