// Command ekaci-cache serves the mesh's Nix binary cache over HTTP: the
// evaluator pushes each .drv closure to it and builders push what they
// built; builders, each with a store of its own, substitute from it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/cache"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("ekaci-cache", flag.ContinueOnError)
	listen := fs.String("listen", ":8081", "address the binary cache is served on")
	dir := fs.String("dir", "/var/lib/ekaci/cache", "where the cache's files are kept")
	maxMiB := fs.Int64("max-mib", 10<<10, "bound the cache to this many MiB, evicting the least recently written paths")
	maxObjMiB := fs.Int64("max-object-mib", 4<<10, "the largest single file (a NAR) accepted, in MiB")
	httpAddr := fs.String("http-addr", ":9090", "address for /metrics, /healthz and /readyz; empty: off")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "json, console, or auto (console on a terminal)")
	if err := flagenv.Parse(fs, args, "EKACI"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "ekaci-cache: %v\n", err)
		return 2
	}
	logger, err := telemetry.NewLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ekaci-cache: %v\n", err)
		return 2
	}
	logger = logger.With().Str("stage", "ekaci-cache").Logger()
	c, err := cache.New(cache.Config{Dir: *dir, MaxBytes: *maxMiB << 20, MaxObjectBytes: *maxObjMiB << 20, Logger: logger})
	if err != nil {
		logger.Error().Err(err).Msg("stopped")
		return 1
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error().Err(err).Msg("stopped")
		return 1
	}
	logger.Info().Str("addr", l.Addr().String()).Str("dir", *dir).Msg("serving the binary cache")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cache.Serve(gctx, l, c, 30*time.Second) })
	if *httpAddr != "" {
		g.Go(func() error { return telemetry.Serve(gctx, *httpAddr, telemetry.NewMetrics(), nil, logger) })
	}
	if err := g.Wait(); err != nil {
		logger.Error().Err(err).Msg("stopped")
		return 1
	}
	return 0
}
