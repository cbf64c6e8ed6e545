package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/flagenv"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/ekaci"
)

// clientOptions are the flags of submit, status and wait: they talk to a
// running ekaci (a mesh, or `ekaci serve`) through its NATS and start no
// stage.
type clientOptions struct {
	natsURL   string
	rev, base string
	repoURL   string
	wait      bool
	output    string
	timeout   time.Duration
}

func (o *clientOptions) natsFlag(fs *flag.FlagSet) {
	fs.StringVar(&o.natsURL, "nats-url", nats.DefaultURL, "the running ekaci's NATS (comma-separated servers of a cluster)")
}

func (o *clientOptions) outputFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.output, "output", "text", "text or json")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up waiting after this long (0: wait until it concludes)")
}

// withFlags hands fs to cmd (cobra parses it anywhere on the line) and
// fills what the line did not give from EKACI_* variables before run.
func withFlags(cmd *cobra.Command, fs *flag.FlagSet, run func(cmd *cobra.Command, args []string) int) *cobra.Command {
	cmd.Flags().SortFlags = false
	cmd.Flags().AddGoFlagSet(fs)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := flagenv.FromEnv(fs, "EKACI", cmd.Flags().Changed); err != nil {
			return usageError{err}
		}
		if code := run(cmd, args); code != 0 {
			return exitCode(code)
		}
		return nil
	}
	return cmd
}

// clientCommands are `ekaci submit`, `ekaci status` and `ekaci wait`.
func clientCommands(ctx context.Context, stdout, stderr io.Writer) []*cobra.Command {
	o := &clientOptions{}
	submit := &cobra.Command{
		Use:   "submit [flags] REPO",
		Short: "submit a change of REPO to a running ekaci (a mesh, or ekaci serve) through its NATS; print the change id (with --wait, its outcome)",
		Long: `Submit a change of REPO to a running ekaci through its NATS, without
starting any stage here; print the change's id, or with --wait its
outcome (exit 0 when everything built, 1 when something failed).

REPO is what the running gitter clones: a URL (file:///srv/repos/demo,
https://...) with --rev and --base as full commit ids, or a local
repository whose revisions are resolved here, named for the gitter by
--repo-url.

Each flag can also be set with an EKACI_* environment variable (--nats-url: EKACI_NATS_URL).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("want exactly one repository, got %d arguments (ekaci submit [flags] REPO)", len(args))}
			}
			return nil
		},
	}
	fs := flag.NewFlagSet("ekaci submit", flag.ContinueOnError)
	o.natsFlag(fs)
	fs.StringVar(&o.rev, "rev", "HEAD", "the revision to build (a full commit id for a URL)")
	fs.StringVar(&o.base, "base", "", "a base revision to compare with")
	fs.StringVar(&o.repoURL, "repo-url", "", "the URL the running gitter clones a local REPO from (e.g. file:///srv/repos/demo)")
	fs.BoolVar(&o.wait, "wait", false, "wait for the change's outcome and print it")
	o.outputFlags(fs)
	withFlags(submit, fs, func(_ *cobra.Command, args []string) int { return o.submit(ctx, args[0], stdout, stderr) })

	status := &cobra.Command{
		Use:   "status [flags] CHANGE",
		Short: "print what a change has come to so far; its outcome once it concluded (exit 0: success, 1: failure, 4: still running)",
		Args:  changeArg("status"),
	}
	fs = flag.NewFlagSet("ekaci status", flag.ContinueOnError)
	o.natsFlag(fs)
	fs.StringVar(&o.output, "output", "text", "text or json")
	withFlags(status, fs, func(_ *cobra.Command, args []string) int { return o.status(ctx, args[0], stdout, stderr) })

	wait := &cobra.Command{
		Use:   "wait [flags] CHANGE",
		Short: "wait until a change concludes and print its outcome (exit 0 when everything built, 1 when something failed)",
		Args:  changeArg("wait"),
	}
	fs = flag.NewFlagSet("ekaci wait", flag.ContinueOnError)
	o.natsFlag(fs)
	o.outputFlags(fs)
	withFlags(wait, fs, func(_ *cobra.Command, args []string) int { return o.waitFor(ctx, args[0], stdout, stderr) })
	return []*cobra.Command{submit, status, wait}
}

// exitStillRunning is status's exit for a change that has not concluded.
const exitStillRunning = 4

func changeArg(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError{fmt.Errorf("want exactly one change id, got %d arguments (ekaci %s [flags] CHANGE)", len(args), name)}
		}
		if !eventlog.ValidToken(args[0]) {
			return usageError{fmt.Errorf("%q is not a change id (ekaci submit prints one)", args[0])}
		}
		return nil
	}
}

// connect reaches the running ekaci's event log. It creates nothing: a
// NATS without ekaci's streams is an error, not a new deployment.
func (o *clientOptions) connect(ctx context.Context, name string) (*nats.Conn, *eventlog.Log, error) {
	nc, err := nats.Connect(o.natsURL, nats.Name("ekaci "+name), nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Second), nats.PingInterval(3*time.Second), nats.MaxPingsOutstanding(2))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w (check --nats-url / EKACI_NATS_URL)", o.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.Stream(sctx, eventlog.EventsStream); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("no ekaci event log at %s (stream %s: %w): is ekaci running there?", o.natsURL, eventlog.EventsStream, err)
	}
	return nc, eventlog.New(js), nil
}

func (o *clientOptions) checkOutput() error {
	if o.output != "text" && o.output != "json" {
		return usageError{fmt.Errorf("--output %q: want text or json", o.output)}
	}
	return nil
}

func (o *clientOptions) submit(ctx context.Context, repo string, stdout, stderr io.Writer) int {
	if err := o.checkOutput(); err != nil {
		fmt.Fprintf(stderr, "ekaci submit: %v\n", err)
		return exitUsage
	}
	change, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo, Rev: o.rev, Base: o.base})
	if err != nil {
		fmt.Fprintf(stderr, "ekaci submit: %v\n", err)
		return exitUsage
	}
	if o.repoURL != "" {
		if !strings.Contains(o.repoURL, "://") {
			fmt.Fprintf(stderr, "ekaci submit: --repo-url %q: want a URL the running gitter can clone\n", o.repoURL)
			return exitUsage
		}
		change.RepoUrl = o.repoURL
	}
	change.Source = "cli"
	nc, log, err := o.connect(ctx, "submit")
	if err != nil {
		fmt.Fprintf(stderr, "ekaci submit: %v\n", err)
		return exitError
	}
	defer nc.Close()
	id, err := ekaci.Submit(ctx, log, change)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci submit: %v\n", err)
		return exitError
	}
	if !o.wait {
		fmt.Fprintln(stdout, id)
		return 0
	}
	fmt.Fprintf(stderr, "change %s\n", id)
	return o.follow(ctx, log, id, stdout, stderr, "submit")
}

func (o *clientOptions) waitFor(ctx context.Context, id string, stdout, stderr io.Writer) int {
	if err := o.checkOutput(); err != nil {
		fmt.Fprintf(stderr, "ekaci wait: %v\n", err)
		return exitUsage
	}
	nc, log, err := o.connect(ctx, "wait")
	if err != nil {
		fmt.Fprintf(stderr, "ekaci wait: %v\n", err)
		return exitError
	}
	defer nc.Close()
	return o.follow(ctx, log, id, stdout, stderr, "wait")
}

// follow waits for the change's outcome and prints it. Following starts
// over from the change's first fact when it fails (a server of the
// cluster going away takes the reader's consumer with it).
func (o *clientOptions) follow(ctx context.Context, log *eventlog.Log, id string, stdout, stderr io.Writer, name string) int {
	wctx := ctx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	for {
		out, err := ekaci.Wait(wctx, log, id, stderr)
		if err == nil {
			return printOutcome(out, o.output, stdout, stderr, name)
		}
		if wctx.Err() != nil {
			fmt.Fprintf(stderr, "ekaci %s: %v\n", name, err)
			return exitError
		}
		if strings.Contains(err.Error(), "was never requested") {
			fmt.Fprintf(stderr, "ekaci %s: %v\n", name, err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "ekaci %s: following change %s again after: %v\n", name, id, err)
		select {
		case <-wctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func printOutcome(out *ekaci.Outcome, output string, stdout, stderr io.Writer, name string) int {
	var err error
	if output == "json" {
		err = ekaci.PrintJSON(stdout, out)
	} else {
		err = ekaci.PrintText(stdout, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ekaci %s: writing the outcome: %v\n", name, err)
		return exitError
	}
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		return exitFailed
	}
	return 0
}

// status prints the change's facts so far, one line each, and its
// outcome once it concluded.
func (o *clientOptions) status(ctx context.Context, id string, stdout, stderr io.Writer) int {
	if err := o.checkOutput(); err != nil {
		fmt.Fprintf(stderr, "ekaci status: %v\n", err)
		return exitUsage
	}
	nc, log, err := o.connect(ctx, "status")
	if err != nil {
		fmt.Fprintf(stderr, "ekaci status: %v\n", err)
		return exitError
	}
	defer nc.Close()
	recs, _, err := log.Load(ctx, eventlog.Change, id)
	if err != nil {
		fmt.Fprintf(stderr, "ekaci status: change %s: %v\n", id, err)
		return exitError
	}
	if len(recs) == 0 {
		fmt.Fprintf(stderr, "ekaci status: change %s was never requested\n", id)
		return exitUsage
	}
	concluded := false
	for _, r := range recs {
		if _, ok := r.Event.GetPayload().(*eventsv1.Event_ChangeConcluded); ok {
			concluded = true
		}
	}
	if concluded {
		// Read to its end at once: every fact is there.
		out, err := ekaci.Wait(ctx, log, id, io.Discard)
		if err != nil {
			fmt.Fprintf(stderr, "ekaci status: %v\n", err)
			return exitError
		}
		return printOutcome(out, o.output, stdout, stderr, "status")
	}
	if o.output == "json" {
		facts := make([]string, len(recs))
		for i, r := range recs {
			facts[i] = r.Fact
		}
		fmt.Fprintf(stdout, "{\"change\": %q, \"conclusion\": \"running\", \"facts\": [%s]}\n", id, quoteAll(facts))
	} else {
		fmt.Fprintf(stdout, "change %s: running\n", id)
		for _, r := range recs {
			fmt.Fprintf(stdout, "  %s  %s\n", r.Time.UTC().Format(time.RFC3339), r.Fact)
		}
	}
	return exitStillRunning
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
