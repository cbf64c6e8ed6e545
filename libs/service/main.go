package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/flagenv"
	"github.com/ekaci/ekaci/libs/telemetry"
)

// Env is what a stage binary's body gets: a connection with the streams
// provisioned, the event log over it, and the process's telemetry.
type Env struct {
	Conn    *nats.Conn
	Events  *eventlog.Log
	Logger  zerolog.Logger
	Metrics *telemetry.Metrics
	Health  *telemetry.Health
}

// Main is the whole of a stage binary's main: it adds the flags every stage
// shares to fs (stage flags are defined on fs before), parses args and
// EKACI_* variables, connects to NATS, serves /metrics and the health
// endpoints, and runs body until SIGINT or SIGTERM, then drains. It
// returns the exit status: 0 after a clean stop, 2 for a usage error, 1
// otherwise, with one line on stderr saying what went wrong.
func Main(fs *flag.FlagSet, args []string, body func(ctx context.Context, env Env) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return MainContext(ctx, fs, args, os.Stderr, body)
}

// MainContext is Main with the context and error output given (for tests).
func MainContext(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer, body func(ctx context.Context, env Env) error) int {
	name := fs.Name()
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", nats.DefaultURL, "NATS server with JetStream")
	replicas := fs.Int("stream-replicas", 1, "replicas of ekaci's streams when this process creates them (3 on a 3-node cluster)")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "json, console, or auto (console on a terminal)")
	httpAddr := fs.String("http-addr", ":9090", "address for /metrics, /healthz and /readyz; empty: off")
	connectTimeout := fs.Duration("connect-timeout", 5*time.Minute, "at start, keep trying to reach NATS and provision the streams for this long (a cluster being started, or electing a meta leader) before exiting")
	storage := AddStorageFlags(fs)
	if err := flagenv.Parse(fs, args, "EKACI"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	logger, err := telemetry.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	logger = logger.With().Str("stage", name).Logger()
	streams, err := storage.Streams(eventlog.StreamOptions{Replicas: *replicas})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	nc, js, err := ConnectRetrying(ctx, *natsURL, name, streams, *connectTimeout, logger)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer func() {
		_ = nc.Drain()
		deadline := time.Now().Add(10 * time.Second)
		for nc.IsDraining() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		nc.Close()
	}()
	env := Env{Conn: nc, Logger: logger, Metrics: telemetry.NewMetrics(), Health: &telemetry.Health{}}
	env.Events = eventlog.New(js, eventlog.WithAppendHook(func(agg, fact string) {
		env.Metrics.EventsAppended.WithLabelValues(agg, fact).Inc()
	}), eventlog.WithHealthHook(env.Health.SetReady))
	logger.Info().Str("nats", *natsURL).Msg("started")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		env.Health.SetReady(name, nil)
		if err := body(gctx, env); err != nil {
			env.Health.SetReady(name, err)
			return err
		}
		return nil
	})
	g.Go(func() error {
		env.Metrics.WatchConsumers(gctx, js, 5*time.Second, logger)
		return nil
	})
	g.Go(func() error {
		eventlog.WatchStorage(gctx, js, 15*time.Second, logger, func(u eventlog.Usage) {
			env.Metrics.SetStreamUsage(u.Stream, u.Bytes, u.MaxBytes)
		})
		return nil
	})
	if *httpAddr != "" {
		g.Go(func() error { return telemetry.Serve(gctx, *httpAddr, env.Metrics, env.Health, logger) })
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	logger.Info().Msg("stopped")
	return 0
}
