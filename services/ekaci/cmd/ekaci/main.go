// Command ekaci is the all-in-one CI server: `ekaci serve` runs every stage
// over an embedded (or external) NATS JetStream; `ekaci run REPO` does the
// same for one revision of a local repository, prints the outcome and exits
// 0 only when everything built; `ekaci version` prints its version and
// those of the Nix and nats-server it runs with. The command line is
// cobra's: flags go before or after arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekaci/ekaci/libs/flagenv"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/libs/logretention"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/admin"
	"github.com/ekaci/ekaci/services/ekaci"
	"github.com/ekaci/ekaci/services/evaluator"
	"github.com/ekaci/ekaci/services/webhook"
)

// Exit statuses: a failed conclusion is 1, a usage error 2, anything that
// stopped ekaci itself (NATS, data dir, ...) 3.
const (
	exitFailed = 1
	exitUsage  = 2
	exitError  = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	cfg       ekaci.Config
	logLevel  string
	logFormat string
	systems   flagenv.List
	features  flagenv.List
	nix       flagenv.Pairs
	machines  string
	rev, base string
	output    string
	timeout   time.Duration
	memLimit  int

	evalMemMiB int64 // --eval-memory-limit-mib

	github      *githubapp.Flags // --github-app-id, --github-private-key, --github-api-url
	webhook     string           // --webhook-listen
	secret      string           // --webhook-secret
	policy      webhook.Policy
	logURL      string // --github-log-url
	adminSocket string // --admin-socket; "" the default under the data dir, "off" none

	checkHostPaths flagenv.List
	checkMemMiB    int64
	checkOutMiB    int64
	checkFilesMiB  int64

	storage     *service.StorageFlags // --events-max-mib, --logs-max-mib, ...
	natsMaxMiB  int64                 // --nats-max-store-mib
	buildLogMiB int64                 // --build-log-max-mib
}

func flags(name string, stderr io.Writer) (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("ekaci "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &o.cfg
	fs.StringVar(&c.DataDir, "data-dir", "", "where ekaci keeps its state: JetStream store, read models, git mirrors, logs (default /var/lib/ekaci for root, else ~/.local/state/ekaci)")
	fs.StringVar(&c.NatsURL, "nats-url", "", "an external NATS server with JetStream; empty runs an embedded one")
	fs.StringVar(&c.NatsHost, "nats-host", "127.0.0.1", "address the embedded NATS server listens on")
	fs.IntVar(&c.NatsPort, "nats-port", 4222, "client port of the embedded NATS server (-1 picks a free one)")
	fs.BoolVar(&c.SyncAlways, "sync-always", false, "embedded NATS fsyncs every write before acknowledging it (slower; protects against power loss)")
	fs.IntVar(&c.Replicas, "stream-replicas", 1, "replicas of ekaci's streams (3 on a 3-node cluster)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "address for /metrics, /healthz and /readyz (e.g. :9090); empty: off")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "json, console, or auto (console on a terminal)")
	fs.Var(&o.systems, "systems", "comma-separated Nix systems the local builder serves (default: this machine's)")
	fs.Var(&o.features, "features", "comma-separated system features the local builder offers (e.g. kvm,big-parallel)")
	fs.IntVar(&c.MaxJobs, "max-jobs", 2, "builds the local builder runs at once")
	fs.IntVar(&c.FODMaxJobs, "fod-max-jobs", 1, "fixed-output (fetch) builds run at once")
	fs.DurationVar(&c.NoOutputTimeout, "no-output-timeout", time.Hour, "stop a build that prints nothing for this long")
	fs.DurationVar(&c.TotalTimeout, "total-timeout", 0, "stop a build that runs longer than this (0: no limit)")
	fs.IntVar(&o.memLimit, "memory-limit-mib", service.DefaultMemoryLimitMiB, "soft limit of this process's Go memory, in MiB: the collector works harder near it instead of letting garbage double the footprint, and less far below it (GOGC 400) (0: none; GOMEMLIMIT and GOGC, when set, win)")
	fs.BoolVar(&c.NoBatch, "no-batch", false, "one nix-build per derivation, instead of one per lane for the ready derivations of a pool")
	fs.Int64Var(&c.AttemptLogMaxBytes, "max-log-bytes", 256<<20, "cap each build attempt's log at this many bytes; past it a notice is written and the build goes on (-1: no cap)")
	fs.DurationVar(&c.EvalTimeout, "eval-timeout", evaluator.DefaultEvalTimeout, "stop evaluating a job (head and base together) after this long; it fails saying so (0: no limit)")
	fs.Int64Var(&o.evalMemMiB, "eval-memory-limit-mib", evaluator.DefaultEvalMemoryLimit>>20, "address-space limit of each Nix process evaluating a job, in MiB; over it the job fails saying so (0: no limit)")
	fs.StringVar(&o.adminSocket, "admin-socket", "", "unix socket of the admin API, mode 0600, no token needed (default <data-dir>/admin.sock; off: none)")
	fs.StringVar(&c.Admin.Addr, "admin-addr", "", "TCP address of the admin API (e.g. 127.0.0.1:7070); empty: none")
	fs.StringVar(&c.Admin.Token, "admin-token", "", "bearer token the admin API's calls over TCP need (reads too, unless --admin-open-reads)")
	flagenv.Secret(fs, "admin-token")
	fs.BoolVar(&c.Admin.OpenReads, "admin-open-reads", false, "let reads over TCP go without the token")
	fs.StringVar(&c.Admin.TLSCert, "admin-tls-cert", "", "PEM certificate: the admin API speaks TLS on --admin-addr")
	fs.StringVar(&c.Admin.TLSKey, "admin-tls-key", "", "PEM key of --admin-tls-cert")
	fs.StringVar(&c.Admin.LogsAddr, "logs-addr", "", "address serving build logs over HTTP, GET /logs/<drv>[/<attempt>][?follow=1] (empty: off)")
	o.storage = service.AddStorageFlags(fs)
	fs.Int64Var(&o.natsMaxMiB, "nats-max-store-mib", 0, "JetStream store limit of the embedded NATS server, in MiB; it must hold the streams' budgets (0: their sum plus 1 GiB)")
	fs.DurationVar(&c.BuildLogMaxAge, "build-log-max-age", logretention.DefaultMaxAge, "delete build logs under <data-dir>/logs last written longer ago than this")
	fs.Int64Var(&o.buildLogMiB, "build-log-max-mib", logretention.DefaultMaxBytes>>20, "bound the build logs under <data-dir>/logs to this many MiB, deleting the oldest first (logs being written are never deleted)")
	fs.StringVar(&o.machines, "machines", "", "a Nix machines file of remote builders (uri systems ssh-key max-jobs speed-factor features mandatory-features host-key)")
	fs.IntVar(&c.CheckMaxJobs, "check-max-jobs", 2, "checks run at once")
	fs.IntVar(&c.CheckUIDBase, "check-uid-base", 61000, "checks run as uids check-uid-base .. +check-max-jobs-1, which nothing else on the machine may use")
	fs.DurationVar(&c.Checks.MaxTimeout, "check-max-timeout", time.Hour, "the longest a check may run, whatever its timeout_seconds")
	fs.Int64Var(&o.checkMemMiB, "check-memory-mib", 2048, "each check's memory, in MiB")
	fs.IntVar(&c.Checks.Processes, "check-processes", 512, "each check's processes and threads")
	fs.Int64Var(&o.checkOutMiB, "check-output-mib", 64, "each check's output, in MiB; past it the check is stopped")
	fs.Int64Var(&o.checkFilesMiB, "check-files-mib", 1024, "what each check may write (its checkout included), in MiB")
	fs.Int64Var(&c.Checks.Files, "check-files", 100_000, "files each check may create (its checkout included)")
	o.checkHostPaths = flagenv.List{"/bin", "/usr", "/lib", "/lib64", "/sbin"}
	fs.Var(&o.checkHostPaths, "check-host-paths", "comma-separated host directories checks see read-only (a shell and tools where no package provides them; never /etc or the data dir)")
	fs.Var(&o.nix, "nix-option", "a Nix option for every evaluation and build, name=value, e.g. substituters= (repeatable; in the environment, separate with ';')")
	if name == "serve" {
		o.github = githubapp.AddFlags(fs)
		fs.StringVar(&o.webhook, "webhook-listen", "", "address GitHub's webhook deliveries arrive on, e.g. :8080 (empty: no GitHub App)")
		fs.StringVar(&o.secret, "webhook-secret", "", "the GitHub App's webhook secret (or EKACI_WEBHOOK_SECRET_FILE)")
		flagenv.Secret(fs, "webhook-secret")
		webhook.AddPolicyFlags(fs, &o.policy)
		fs.StringVar(&o.logURL, "github-log-url", "", "link to a derivation's full log in check runs: {drv} and {attempt} are replaced (empty: name the file on the server)")
	}
	if name == "run" {
		fs.StringVar(&o.rev, "rev", "HEAD", "the revision to build")
		fs.StringVar(&o.base, "base", "", "a base revision to compare with (attributes are then new, changed, removed or unchanged)")
		fs.StringVar(&o.output, "output", "text", "text or json")
		fs.DurationVar(&o.timeout, "timeout", 0, "give up waiting after this long (0: wait until it concludes)")
	}
	return fs, o
}

// exitCode carries a command's exit status through cobra.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// usageError is a command line cobra or a command refused: exit 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

// run runs the command line args (without the program name) and returns
// its exit status. Flags may come before or after arguments (ekaci run
// REPO --output json), as in git, nix and kubectl.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(ctx, stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	default:
		// A usage error (an unknown command or flag, a bad flag value,
		// missing arguments): one line saying what is wrong.
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
		return exitUsage
	}
}

// newRoot builds the command tree.
func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "ekaci",
		Short: "ekaci — continuous integration for Nix repositories",
		Long: `ekaci — continuous integration for Nix repositories

Each flag can also be set with an EKACI_* environment variable
(e.g. --nats-url and EKACI_NATS_URL); a secret also from a file named
by EKACI_<NAME>_FILE.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without a command: the usage, and a usage error's status.
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(stderr)
			_ = cmd.Usage()
			return exitCode(exitUsage)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetContext(ctx)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		stageCommand(ctx, "run", "run [flags] REPO", "build one revision of REPO (a git repository with .ekaci/config.json), print the outcome, exit 0 when everything built, 1 when something failed", stdout, stderr),
		stageCommand(ctx, "serve", "serve [flags]", "run every stage until SIGINT/SIGTERM", stdout, stderr),
		versionCommand(stdout, os.Getenv),
	)
	root.AddCommand(clientCommands(ctx, stdout, stderr)...)
	return root
}

// stageCommand is `ekaci run` or `ekaci serve`: its flags are defined on
// a flag.FlagSet (shared with flagenv and the stage libraries) and handed
// to cobra, which parses them anywhere on the line.
func stageCommand(ctx context.Context, name, use, short string, stdout, stderr io.Writer) *cobra.Command {
	fs, o := flags(name, stderr)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  short + ".\n\nEach flag can also be set with an EKACI_* environment variable (--nats-url: EKACI_NATS_URL).",
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case name == "run" && len(args) != 1:
				return usageError{fmt.Errorf("want exactly one repository, got %d arguments (ekaci run [flags] REPO)", len(args))}
			case name == "serve" && len(args) != 0:
				return usageError{fmt.Errorf("unexpected arguments %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flagenv.FromEnv(fs, "EKACI", cmd.Flags().Changed); err != nil {
				return usageError{err}
			}
			if code := execute(ctx, name, args, o, stdout, stderr); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().SortFlags = false
	cmd.Flags().AddGoFlagSet(fs)
	return cmd
}

// execute runs `ekaci run` or `ekaci serve` with its flags parsed.
func execute(ctx context.Context, cmd string, args []string, o *options, stdout, stderr io.Writer) int {
	logger, err := telemetry.NewLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci: %v\n", err)
		return exitUsage
	}
	o.cfg.Logger = logger
	if o.memLimit < 0 {
		fmt.Fprintf(stderr, "ekaci %s: --memory-limit-mib %d: want 0 (none) or a size in MiB\n", cmd, o.memLimit)
		return exitUsage
	}
	service.SetMemoryLimit(o.memLimit)
	o.cfg.Systems = o.systems
	o.cfg.Features = o.features
	o.cfg.NixOptions = o.nix
	if o.cfg.Streams, err = o.storage.Streams(o.cfg.Streams); err != nil {
		fmt.Fprintf(stderr, "ekaci %s: %v\n", cmd, err)
		return exitUsage
	}
	if o.natsMaxMiB < 0 || o.buildLogMiB <= 0 || o.cfg.BuildLogMaxAge <= 0 {
		fmt.Fprintf(stderr, "ekaci %s: --nats-max-store-mib %d, --build-log-max-mib %d, --build-log-max-age %v: want sizes and an age above 0 (the store limit may be 0: automatic)\n", cmd, o.natsMaxMiB, o.buildLogMiB, o.cfg.BuildLogMaxAge)
		return exitUsage
	}
	o.cfg.NatsMaxStore, o.cfg.BuildLogMaxBytes = o.natsMaxMiB<<20, o.buildLogMiB<<20
	if o.checkMemMiB <= 0 || o.checkOutMiB <= 0 || o.checkFilesMiB <= 0 || o.cfg.Checks.Processes <= 0 || o.cfg.Checks.Files <= 0 || o.cfg.Checks.MaxTimeout <= 0 || o.cfg.CheckMaxJobs <= 0 {
		fmt.Fprintf(stderr, "ekaci %s: the --check-* limits must be above 0\n", cmd)
		return exitUsage
	}
	o.cfg.Checks.MemoryBytes, o.cfg.Checks.OutputBytes, o.cfg.Checks.FilesBytes = o.checkMemMiB<<20, o.checkOutMiB<<20, o.checkFilesMiB<<20
	o.cfg.CheckHostPaths = o.checkHostPaths
	if o.cfg.EvalTimeout <= 0 {
		o.cfg.EvalTimeout = -1 // the flag's 0 is no limit; Config's 0 the default
	}
	o.cfg.EvalMemoryLimit = -1
	if o.evalMemMiB > 0 {
		o.cfg.EvalMemoryLimit = o.evalMemMiB << 20
	}
	switch o.adminSocket {
	case "off":
	case "":
		dir := o.cfg.DataDir
		if dir == "" {
			dir = service.DefaultDataDir()
		}
		o.cfg.Admin.Socket = filepath.Join(dir, "admin.sock")
	default:
		o.cfg.Admin.Socket = o.adminSocket
	}
	if err := (admin.Config{Socket: o.cfg.Admin.Socket, Addr: o.cfg.Admin.Addr, TLSCert: o.cfg.Admin.TLSCert, TLSKey: o.cfg.Admin.TLSKey}).Check(); o.cfg.Admin.Socket+o.cfg.Admin.Addr != "" && err != nil {
		fmt.Fprintf(stderr, "ekaci %s: %v\n", cmd, err)
		return exitUsage
	}
	if o.machines != "" {
		if o.cfg.Machines, err = machines.ReadFile(o.machines); err != nil {
			fmt.Fprintf(stderr, "ekaci %s: --machines: %v\n", cmd, err)
			return exitUsage
		}
	}

	if cmd == "serve" && (o.webhook != "" || o.github.Configured()) {
		if o.webhook == "" || o.secret == "" || !o.github.Configured() {
			fmt.Fprintf(stderr, "ekaci serve: the GitHub App needs --webhook-listen, --webhook-secret, --github-app-id and --github-private-key together\n")
			return exitUsage
		}
		app, err := o.github.App()
		if err != nil {
			fmt.Fprintf(stderr, "ekaci serve: %v\n", err)
			return exitUsage
		}
		o.cfg.GitHub = &ekaci.GitHubConfig{App: app, Addr: o.webhook, Secret: []byte(o.secret), Policy: o.policy, LogURL: o.logURL}
	}

	var req ekaci.Request
	if cmd == "run" {
		if o.output != "text" && o.output != "json" {
			fmt.Fprintf(stderr, "ekaci run: --output %q: want text or json\n", o.output)
			return exitUsage
		}
		req = ekaci.Request{Repo: args[0], Rev: o.rev, Base: o.base}
		o.cfg.Notify = io.Discard
	}
	// Check the request before starting anything, so a typo costs nothing.
	var change *eventsv1.ChangeRequested
	if cmd == "run" {
		if change, err = ekaci.Resolve(ctx, req); err != nil {
			fmt.Fprintf(stderr, "ekaci run: %v\n", err)
			return exitUsage
		}
	}

	app, err := ekaci.Start(ctx, o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci: %v\n", err)
		return exitError
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		app.Close(cctx)
	}()
	if app.Embedded() {
		fmt.Fprintf(stderr, "ekaci: embedded NATS at %s (data dir %s); look inside with: nats -s %s stream ls\n", app.NatsURL(), app.DataDir(), app.NatsURL())
	} else {
		fmt.Fprintf(stderr, "ekaci: using NATS at %s\n", app.NatsURL())
	}
	if sock := o.cfg.Admin.Socket; sock != "" {
		fmt.Fprintf(stderr, "ekaci: admin API on unix socket %s (ekactl --server unix://%s)\n", sock, sock)
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	done := make(chan error, 1)
	go func() { done <- app.Run(runCtx) }()

	if cmd == "serve" {
		if err := <-done; err != nil {
			fmt.Fprintf(stderr, "ekaci: %v\n", err)
			return exitError
		}
		return 0
	}

	code := runOnce(runCtx, app, change, o, stdout, stderr, done)
	cancelRun()
	if err := <-done; err != nil && code == 0 {
		fmt.Fprintf(stderr, "ekaci: %v\n", err)
		return exitError
	}
	return code
}

// runOnce submits one change and waits for its conclusion, or for a stage
// to fail, or for a signal.
func runOnce(ctx context.Context, app *ekaci.App, change *eventsv1.ChangeRequested, o *options, stdout, stderr io.Writer, done chan error) int {
	id, err := ekaci.Submit(ctx, app.Events(), change)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci run: %v\n", err)
		return exitError
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.timeout > 0 {
		wctx, cancel = context.WithTimeout(wctx, o.timeout)
		defer cancel()
	}
	type result struct {
		out *ekaci.Outcome
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := ekaci.Wait(wctx, app.Events(), id, stderr)
		res <- result{out, err}
	}()
	var r result
	select {
	case r = <-res:
	case err := <-done:
		cancel()
		<-res
		if err == nil {
			err = errors.New("stopped before the change concluded")
		}
		done <- err // the caller reads it again
		fmt.Fprintf(stderr, "ekaci run: %v\n", err)
		return exitError
	}
	if r.err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "ekaci run: interrupted; change %s resumes on the next start with the same --data-dir\n", id)
			return exitError
		}
		fmt.Fprintf(stderr, "ekaci run: %v\n", r.err)
		return exitError
	}
	if o.output == "json" {
		err = ekaci.PrintJSON(stdout, r.out)
	} else {
		err = ekaci.PrintText(stdout, r.out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ekaci run: writing the outcome: %v\n", err)
		return exitError
	}
	if r.out.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		return exitFailed
	}
	return 0
}
