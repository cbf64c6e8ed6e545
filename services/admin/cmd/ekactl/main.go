// Command ekactl administers an ekaci server through its admin API (see
// services/admin/ctl).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ekaci/ekaci/services/admin/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(ctl.Run(ctx, os.Args[1:], ctl.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, IsTerminal: ctl.Terminal(os.Stdout)}))
}
