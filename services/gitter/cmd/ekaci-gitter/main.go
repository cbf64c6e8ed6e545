// Command ekaci-gitter is the gitter stage on its own, for a mesh: it checks
// out requested changes into a git store the reader and evaluator share.
// Given the GitHub App, it fetches private repositories with their
// installation's token.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/gitter"
)

func main() {
	fs := flag.NewFlagSet("ekaci-gitter", flag.ContinueOnError)
	gitDir := fs.String("git-dir", "/var/lib/ekaci/git", "mirrors and worktrees; mount the same path into the reader and evaluator")
	gcroots := fs.String("gcroots-dir", "", "the evaluator's --gcroots-dir: DIR/<change id> is removed when the change concludes (empty: nothing to remove)")
	gh := githubapp.AddFlags(fs)
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		cfg := gitter.Config{Events: env.Events, Logger: env.Logger, GitDir: *gitDir, GCRootsDir: *gcroots, Metrics: env.Metrics}
		if gh.Configured() {
			app, err := gh.App()
			if err != nil {
				return err
			}
			cfg.Tokens = app // private repositories of the App's installations
		}
		return gitter.Run(ctx, cfg)
	}))
}
