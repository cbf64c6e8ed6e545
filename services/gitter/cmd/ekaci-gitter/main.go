// Command ekaci-gitter is the gitter stage on its own, for a mesh: it checks
// out requested changes into a git store the reader and evaluator share.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/gitter"
)

func main() {
	fs := flag.NewFlagSet("ekaci-gitter", flag.ContinueOnError)
	gitDir := fs.String("git-dir", "/var/lib/ekaci/git", "mirrors and worktrees; mount the same path into the reader and evaluator")
	gcroots := fs.String("gcroots-dir", "", "the evaluator's --gcroots-dir: DIR/<change id> is removed when the change concludes (empty: nothing to remove)")
	os.Exit(service.Main(fs, os.Args[1:], func(ctx context.Context, env service.Env) error {
		return gitter.Run(ctx, gitter.Config{Events: env.Events, Logger: env.Logger, GitDir: *gitDir, GCRootsDir: *gcroots, Metrics: env.Metrics})
	}))
}
