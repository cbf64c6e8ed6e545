// Package ekaci is the all-in-one server: an embedded NATS JetStream (or an
// external NATS) and every stage — gitter, reader, evaluator, ingress,
// router, builder, checker, recorder, notifier — in one process, each talking to
// the others only through JetStream subjects, exactly as the separate
// stage binaries do in a mesh.
package ekaci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/logretention"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natsembed"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/admin"
	"github.com/ekaci/ekaci/services/builder"
	"github.com/ekaci/ekaci/services/checker"
	"github.com/ekaci/ekaci/services/evaluator"
	"github.com/ekaci/ekaci/services/gitter"
	"github.com/ekaci/ekaci/services/ingress"
	"github.com/ekaci/ekaci/services/notifier"
	"github.com/ekaci/ekaci/services/notifier/checkrun"
	"github.com/ekaci/ekaci/services/reader"
	"github.com/ekaci/ekaci/services/recorder"
	"github.com/ekaci/ekaci/services/router"
	"github.com/ekaci/ekaci/services/webhook"
)

// Config is the all-in-one's configuration (flags and EKACI_* variables).
type Config struct {
	DataDir    string
	NatsURL    string // external NATS; empty runs an embedded server
	NatsHost   string
	NatsPort   int // embedded client port; -1 picks a free one
	SyncAlways bool
	Replicas   int
	HTTPAddr   string // metrics and health; empty: off
	// Streams sizes ekaci's streams (byte budgets; Replicas above wins
	// over its Replicas); zero fields are eventlog's defaults.
	Streams eventlog.StreamOptions
	// NatsMaxStore is the embedded server's JetStream store limit in
	// bytes; 0: the streams' budgets (Streams.Reserved) plus 1 GiB.
	NatsMaxStore int64
	// BuildLogMaxAge and BuildLogMaxBytes bound the build logs under
	// <data-dir>/logs (0: logretention's defaults, 30 days and 20 GiB).
	BuildLogMaxAge   time.Duration
	BuildLogMaxBytes int64

	Systems         []string
	Features        []string
	MaxJobs         int
	FODMaxJobs      int
	NoOutputTimeout time.Duration
	TotalTimeout    time.Duration
	NixOptions      []string // name, value pairs
	// NoBatch gives every derivation a nix-build of its own instead of
	// batching a pool's ready derivations into one nix-build per lane.
	NoBatch bool
	// AttemptLogMaxBytes caps each build attempt's log (0: the builder's
	// default, 256 MiB; < 0: none).
	AttemptLogMaxBytes int64
	// EvalTimeout and EvalMemoryLimit (bytes) bound the evaluation of one
	// job (see evaluator.Config): 0 is the evaluator's default, < 0 none.
	EvalTimeout     time.Duration
	EvalMemoryLimit int64
	// Checks configures the checker: its limits, uids and host paths
	// (zero fields are the checker's defaults). CheckMaxJobs is how many
	// checks run at once (default 2).
	Checks       checker.Limits
	CheckMaxJobs int
	CheckUIDBase int
	// CheckHostPaths are host directories checks see read-only; nil: the
	// checker's defaults.
	CheckHostPaths []string
	// Machines are remote builders (Nix machines-file format); their
	// health is checked with `nix store ping` before they get work.
	Machines []machines.Machine

	// Admin configures the admin API (services/admin); it runs when it
	// has a socket or an address.
	Admin AdminConfig

	Logger zerolog.Logger
	// Notify receives the conclusion lines; nil discards them.
	Notify io.Writer

	// GitHub, when set, runs the GitHub App too: its webhook and the
	// check runs that answer on pull requests.
	GitHub *GitHubConfig
}

// GitHubConfig is the all-in-one's GitHub App.
type GitHubConfig struct {
	App *githubapp.App
	// Webhook serves GitHub's deliveries: Listener when set, else Addr.
	Listener net.Listener
	Addr     string
	Secret   []byte
	Policy   webhook.Policy
	// LogURL links full build logs in check runs (see checkrun.Config).
	LogURL string
	// CloneURLs maps clone URLs (prefixes) to where the gitter fetches
	// them instead: a mirror, or a local path in tests.
	CloneURLs map[string]string
}

// AdminConfig is the admin API's part of Config (see admin.Config).
type AdminConfig struct {
	Socket, Addr, Token string
	OpenReads           bool
	TLSCert, TLSKey     string
	LogsAddr            string // GET /logs/... over HTTP
	// Ready, when set, is told where it listens.
	Ready func(admin.Listening)
}

func (c AdminConfig) enabled() bool { return c.Socket != "" || c.Addr != "" }

// App is a started all-in-one.
type App struct {
	cfg     Config
	unlock  func()
	server  *natsembed.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *eventlog.Log
	metrics *telemetry.Metrics
	health  *telemetry.Health
	url     string
}

// Start locks the data dir, starts or reaches NATS and provisions the
// streams. Every failure is one clear error; nothing is left running.
func Start(ctx context.Context, cfg Config) (_ *App, err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = service.DefaultDataDir()
	}
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}
	if len(cfg.Systems) == 0 {
		cfg.Systems = []string{service.CurrentSystem()}
	}
	a := &App{cfg: cfg, metrics: telemetry.NewMetrics(), health: &telemetry.Health{}}
	defer func() {
		if err != nil {
			a.Close(context.WithoutCancel(ctx))
		}
	}()
	if a.unlock, err = service.Lock(cfg.DataDir); err != nil {
		return nil, err
	}
	a.url = cfg.NatsURL
	streams := cfg.Streams
	streams.Replicas = cfg.Replicas
	if a.url == "" {
		// The store holds every stream's reserved budget, so live logs
		// can never take the space events need.
		maxStore := cfg.NatsMaxStore
		if maxStore <= 0 {
			maxStore = streams.Reserved() + 1<<30
		}
		a.server, err = natsembed.Start(natsembed.Config{
			DataDir: filepath.Join(cfg.DataDir, "nats"), Host: cfg.NatsHost, Port: cfg.NatsPort,
			SyncAlways: cfg.SyncAlways, MaxStore: maxStore, Logger: cfg.Logger.With().Str("component", "nats").Logger(),
		})
		if err != nil {
			return nil, err
		}
		a.url = a.server.ClientURL()
	}
	if a.nc, a.js, err = service.Connect(ctx, a.url, "ekaci", streams); err != nil {
		if cfg.NatsURL != "" {
			return nil, fmt.Errorf("%w; or leave --nats-url empty to run an embedded server", err)
		}
		return nil, err
	}
	a.log = eventlog.New(a.js, eventlog.WithAppendHook(func(agg, fact string) {
		a.metrics.EventsAppended.WithLabelValues(agg, fact).Inc()
	}), eventlog.WithHealthHook(a.health.SetReady))
	return a, nil
}

// NatsURL is the URL stages (and `nats` CLI users) connect to.
func (a *App) NatsURL() string { return a.url }

// DataDir is the absolute data directory in use.
func (a *App) DataDir() string { return a.cfg.DataDir }

// Embedded reports whether the NATS server runs in this process.
func (a *App) Embedded() bool { return a.server != nil }

// Events is the event log.
func (a *App) Events() *eventlog.Log { return a.log }

// Metrics is what every stage of the app counts (what /metrics serves).
func (a *App) Metrics() *telemetry.Metrics { return a.metrics }

// Run runs every stage until ctx ends, then drains them.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
	lg := func(stage string) zerolog.Logger { return cfg.Logger.With().Str("stage", stage).Logger() }
	notify := cfg.Notify
	if notify == nil {
		notify = io.Discard
	}
	topo := machines.Topology{Systems: cfg.Systems, Features: cfg.Features, MaxJobs: cfg.MaxJobs, FODMaxJobs: cfg.FODMaxJobs, Remote: cfg.Machines}
	var health *machines.Health
	if len(cfg.Machines) > 0 {
		// One checker for the router and the builder, kept current here.
		health = machines.NewHealth(cfg.Machines, nil, 30*time.Second, lg("machines"))
	}

	g, ctx := errgroup.WithContext(ctx)
	// Ingress and the recorder read every derivation event; here, in one
	// process, they share one consumer (each event delivered and decoded
	// once instead of twice).
	models := []string{ingress.ReadModel, recorder.ReadModel}
	if cfg.Admin.enabled() {
		models = append(models, admin.ReadModel)
	}
	feed := projection.NewFeed(a.log, lg("feed"), models...)
	stages := map[string]func(context.Context) error{
		"gitter": func(ctx context.Context) error {
			gcfg := gitter.Config{Events: a.log, Logger: lg("gitter"), GitDir: filepath.Join(cfg.DataDir, "git"),
				GCRootsDir: filepath.Join(cfg.DataDir, "gcroots"), Metrics: a.metrics}
			if gh := cfg.GitHub; gh != nil {
				gcfg.CloneURLs = gh.CloneURLs
				if gh.App != nil {
					gcfg.Tokens = gh.App // private checkouts with installation tokens
				}
			}
			return gitter.Run(ctx, gcfg)
		},
		"reader": func(ctx context.Context) error {
			return reader.Run(ctx, reader.Config{Events: a.log, Logger: lg("reader"), Metrics: a.metrics})
		},
		"evaluator": func(ctx context.Context) error {
			return evaluator.Run(ctx, evaluator.Config{
				Events: a.log, Logger: lg("evaluator"), NixOptions: cfg.NixOptions, Metrics: a.metrics,
				EvalTimeout: cfg.EvalTimeout, EvalMemoryLimit: cfg.EvalMemoryLimit,
				// <data-dir>/gcroots/<change id>/<jobset id>/drv...: the gitter
				// removes <data-dir>/gcroots/<change id> when the change concludes.
				GCRootsDir: filepath.Join(cfg.DataDir, "gcroots"),
			})
		},
		"ingress": func(ctx context.Context) error {
			return ingress.Run(ctx, ingress.Config{Events: a.log, DataDir: cfg.DataDir, Logger: lg("ingress"), Feed: feed})
		},
		"router": func(ctx context.Context) error {
			return router.Run(ctx, router.Config{Events: a.log, Logger: lg("router"), Routes: topo.Routes(), Health: health, Metrics: a.metrics})
		},
		"builder": func(ctx context.Context) error {
			return builder.Run(ctx, builder.Config{
				Events: a.log, Conn: a.nc, Logger: lg("builder"), Name: "local", Pools: topo.Pools(),
				NixOptions: cfg.NixOptions, NoOutputTimeout: cfg.NoOutputTimeout, TotalTimeout: cfg.TotalTimeout,
				BuildLogDir: filepath.Join(cfg.DataDir, "logs"), Metrics: a.metrics, Health: health, NoBatch: cfg.NoBatch,
				StateDir: filepath.Join(cfg.DataDir, "builder"), AttemptLogMaxBytes: cfg.AttemptLogMaxBytes,
			})
		},
		"recorder": func(ctx context.Context) error {
			return recorder.Run(ctx, recorder.Config{Events: a.log, DataDir: cfg.DataDir, Logger: lg("recorder"), Feed: feed, Metrics: a.metrics})
		},
		"checker": func(ctx context.Context) error {
			return checker.Run(ctx, checker.Config{
				Events: a.log, Conn: a.nc, Logger: lg("checker"), Metrics: a.metrics, Name: "local",
				CheckLogDir: filepath.Join(cfg.DataDir, "logs"), StateDir: filepath.Join(cfg.DataDir, "checker"),
				MaxJobs: cfg.CheckMaxJobs, UIDBase: cfg.CheckUIDBase, HostPaths: cfg.CheckHostPaths, Limits: cfg.Checks, NixOptions: cfg.NixOptions,
			})
		},
		"notifier": func(ctx context.Context) error {
			return notifier.Run(ctx, notifier.Config{Events: a.log, Logger: lg("notifier"), Sink: notifier.NewLocal(notify)})
		},
	}
	if gh := cfg.GitHub; gh != nil {
		stages["webhook"] = func(ctx context.Context) error {
			return webhook.Run(ctx, webhook.Config{Events: a.log, Logger: lg("webhook"), Secret: gh.Secret, Addr: gh.Addr, Listener: gh.Listener,
				Replicas: cfg.Replicas, Policy: gh.Policy, App: gh.App})
		}
		stages["checkrun"] = func(ctx context.Context) error {
			return checkrun.Run(ctx, checkrun.Config{Events: a.log, Logger: lg("checkrun"), App: gh.App, DataDir: cfg.DataDir, LogURL: gh.LogURL})
		}
	}
	if ac := cfg.Admin; ac.enabled() {
		var approved []string // the webhook's configured approvals, for ListApprovals
		if cfg.GitHub != nil {
			approved = cfg.GitHub.Policy.Approved
		}
		stages["admin"] = func(ctx context.Context) error {
			return admin.Run(ctx, admin.Config{Events: a.log, DataDir: cfg.DataDir, LogDir: filepath.Join(cfg.DataDir, "logs"), Logger: lg("admin"), Feed: feed, Approved: approved,
				Socket: ac.Socket, Addr: ac.Addr, Token: ac.Token, OpenReads: ac.OpenReads, TLSCert: ac.TLSCert, TLSKey: ac.TLSKey, HTTPAddr: ac.LogsAddr, Ready: ac.Ready})
		}
	}
	for name, run := range stages {
		g.Go(func() error {
			a.health.SetReady(name, nil)
			if err := run(ctx); err != nil {
				a.health.SetReady(name, err)
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	if health != nil {
		g.Go(func() error {
			health.Run(ctx)
			return nil
		})
	}
	g.Go(func() error {
		a.metrics.WatchConsumers(ctx, a.js, 5*time.Second, lg("metrics"))
		return nil
	})
	g.Go(func() error {
		eventlog.WatchStorage(ctx, a.js, 15*time.Second, lg("storage"), func(u eventlog.Usage) {
			a.metrics.SetStreamUsage(u.Stream, u.Bytes, u.MaxBytes)
		})
		return nil
	})
	g.Go(func() error {
		return logretention.New(logretention.Config{
			Dir: filepath.Join(cfg.DataDir, "logs"), MaxAge: cfg.BuildLogMaxAge, MaxBytes: cfg.BuildLogMaxBytes, Logger: lg("logretention"),
		}).Run(ctx)
	})
	if cfg.HTTPAddr != "" {
		g.Go(func() error { return telemetry.Serve(ctx, cfg.HTTPAddr, a.metrics, a.health, lg("http")) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Close drains the connection, stops the embedded server and releases the
// data dir.
func (a *App) Close(ctx context.Context) {
	if a.nc != nil {
		_ = a.nc.Drain()
		for a.nc.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if a.server != nil {
		_ = a.server.Shutdown(ctx)
	}
	if a.unlock != nil {
		a.unlock()
	}
}
