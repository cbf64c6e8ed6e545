package ctl

import (
	"context"

	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// table writes rows aligned in columns. A painted cell carries 9 bytes of
// escape codes (paint gives every state in a column the same): its
// header gets 9 as well (bold), so that the columns stay aligned.
func (c *cli) table(header []string, rows [][]string) error {
	w := tabwriter.NewWriter(c.env.Stdout, 0, 0, 2, ' ', 0)
	if len(rows) > 0 {
		header = append([]string(nil), header...)
		for i, cell := range rows[0] {
			if strings.HasPrefix(cell, "\x1b[") && i < len(header) {
				header[i] = "\x1b[01m" + header[i] + "\x1b[0m"
			}
		}
	}
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// paint colours a state name (on a terminal, without NO_COLOR).
func (c *cli) paint(state string) string {
	if !c.colour() {
		return state
	}
	code := "39" // the default colour: as many bytes as the others
	switch state {
	case "succeeded", "success", "SUCCESS":
		code = "32"
	case "failed", "transitive-failure", "eval-error", "failure", "FAILURE":
		code = "31"
	case "interrupted", "blocked", "cancelled", "CANCELLED":
		code = "33"
	case "building", "buildable":
		code = "36"
	}
	return "\x1b[" + code + "m" + state + "\x1b[0m"
}

func conclusion(c eventsv1.Conclusion) string {
	if c == eventsv1.Conclusion_CONCLUSION_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(c.String(), "CONCLUSION_"))
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) changesCmd() *cobra.Command {
	var state, repo, page string
	var limit uint32
	cmd := &cobra.Command{
		Use:   "changes",
		Short: "list changes, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ListChanges(ctx, &adminv1.ListChangesRequest{State: state, Repo: repo, PageSize: limit, PageToken: page, AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			var rows [][]string
			for _, ch := range resp.GetChanges() {
				repoName := ch.GetRepoName()
				if repoName == "" {
					repoName = ch.GetRepoUrl()
				}
				pr := "-"
				if n := ch.GetPullRequest(); n != 0 {
					pr = "#" + strconv.FormatInt(n, 10)
				}
				rows = append(rows, []string{ch.GetId(), oneLine(repoName, 40), pr, short(ch.GetHeadCommit(), 12), orDash(short(ch.GetBaseCommit(), 12)), ch.GetState(), c.paint(conclusion(ch.GetConclusion())), when(ch.GetRequestedAt())})
			}
			if err := c.table([]string{"CHANGE", "REPO", "PR", "HEAD", "BASE", "STATE", "CONCLUSION", "REQUESTED"}, rows); err != nil {
				return err
			}
			if t := resp.GetNextPageToken(); t != "" {
				fmt.Fprintf(c.env.Stderr, "more: ekactl changes --page %s\n", t)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only changes in this state (requested, checked-out, configured, concluded, ...)")
	cmd.Flags().StringVar(&repo, "repo", "", "only changes whose repository URL or name contains this")
	cmd.Flags().Uint32Var(&limit, "limit", 50, "at most this many (up to 1000)")
	cmd.Flags().StringVar(&page, "page", "", "the page a previous listing pointed to")
	return cmd
}

func (c *cli) changeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "change ID",
		Short: "show a change and its jobsets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.GetChange(ctx, &adminv1.GetChangeRequest{Id: args[0], AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			ch := resp.GetChange()
			fmt.Fprintf(c.env.Stdout, "change      %s\nrepository  %s\nhead        %s\nbase        %s\nstate       %s\nconclusion  %s\nsummary     %s\n\n",
				ch.GetId(), orDash(ch.GetRepoUrl()), ch.GetHeadCommit(), orDash(ch.GetBaseCommit()), ch.GetState(), c.paint(conclusion(ch.GetConclusion())), orDash(ch.GetSummary()))
			return c.jobsetRows(resp.GetJobsets())
		},
	}
}

func countsLine(counts map[string]uint32) string {
	order := []string{"succeeded", "failed", "transitive-failure", "interrupted", "blocked", "building", "buildable", "queued", "eval-error", "removed"}
	var parts []string
	seen := map[string]bool{}
	for _, k := range order {
		if n := counts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
		seen[k] = true
	}
	for k, n := range counts {
		if !seen[k] && n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	return orDash(strings.Join(parts, ", "))
}

func (c *cli) jobsetRows(jobsets []*adminv1.Jobset) error {
	var rows [][]string
	for _, js := range jobsets {
		rows = append(rows, []string{js.GetId(), js.GetJob(), js.GetState(), c.paint(conclusion(js.GetConclusion())), countsLine(js.GetCounts())})
	}
	return c.table([]string{"JOBSET", "JOB", "STATE", "CONCLUSION", "ATTRIBUTES"}, rows)
}

func (c *cli) jobsetCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "jobset ID",
		Short: "show a jobset and its attributes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.GetJobset(ctx, &adminv1.GetJobsetRequest{Id: args[0], State: state, AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			if err := c.jobsetRows([]*adminv1.Jobset{resp.GetJobset()}); err != nil {
				return err
			}
			fmt.Fprintln(c.env.Stdout)
			var rows [][]string
			for _, a := range resp.GetAttrs() {
				diff := strings.ToLower(strings.TrimPrefix(a.GetDifference().String(), "DIFFERENCE_"))
				if diff == "unspecified" {
					diff = "-"
				}
				rows = append(rows, []string{a.GetAttr(), c.paint(a.GetState()), diff, orDash(a.GetDrvId()), orDash(oneLine(a.GetError(), 60))})
			}
			return c.table([]string{"ATTRIBUTE", "STATE", "DIFFERENCE", "DERIVATION", "DETAIL"}, rows)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only attributes in this state (succeeded, failed, eval-error, ...)")
	return cmd
}

func (c *cli) drvCmd() *cobra.Command {
	var hist bool
	cmd := &cobra.Command{
		Use:   "drv PATH|HASH",
		Short: "show a derivation: state, attempts, dependents, root cause",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.GetDerivation(ctx, &adminv1.GetDerivationRequest{Id: args[0], AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if !hist {
				resp.History = nil
			}
			if c.json() {
				return c.printJSON(resp)
			}
			d := resp.GetDerivation()
			out := c.env.Stdout
			fmt.Fprintf(out, "derivation  %s\npath        %s\nsystem      %s\nstate       %s\n", d.GetId(), d.GetDrvPath(), d.GetSystem(), c.paint(d.GetState()))
			if k := d.GetInterruption(); k != eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED {
				fmt.Fprintf(out, "interrupted %s\n", strings.ToLower(strings.TrimPrefix(k.String(), "INTERRUPT_KIND_")))
			}
			if r := resp.GetRootCause(); r != nil {
				fmt.Fprintf(out, "root cause  %s (%s)\n", r.GetDrvPath(), r.GetState())
			}
			fmt.Fprintf(out, "inputs      %d\ndependents  %d\n", len(d.GetInputDrvIds()), len(resp.GetDependentDrvIds()))
			if s := d.GetDetail(); s != "" {
				fmt.Fprintf(out, "detail      %s\n", oneLine(s, 100))
			}
			fmt.Fprintln(out)
			var rows [][]string
			for _, a := range d.GetAttempts() {
				rows = append(rows, []string{strconv.Itoa(int(a.GetNumber())), orDash(a.GetBuilder()), orDash(a.GetHolder()), orDash(a.GetOutcome()), fmt.Sprintf("%dms", a.GetDurationMs())})
			}
			if err := c.table([]string{"ATTEMPT", "BUILDER", "HOLDER", "OUTCOME", "DURATION"}, rows); err != nil {
				return err
			}
			if hist {
				fmt.Fprintln(out)
				var rows [][]string
				for _, t := range resp.GetHistory() {
					who := "-"
					if a := t.GetActor(); a != nil {
						who = a.GetWho()
					}
					rows = append(rows, []string{strconv.FormatUint(t.GetSeq(), 10), when(t.GetAt()), t.GetFact(), attemptCol(t.GetAttempt()), orDash(t.GetBuilder()), c.paint(t.GetState()), who})
				}
				return c.table([]string{"SEQ", "AT", "FACT", "ATTEMPT", "BUILDER", "STATE", "BY"}, rows)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&hist, "history", false, "also every fact recorded on it")
	return cmd
}

func attemptCol(n uint32) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(int(n))
}

func (c *cli) failuresCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "failures JOBSET",
		Short: "a jobset's failed attributes, grouped by the derivation that caused them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ListFailures(ctx, &adminv1.ListFailuresRequest{JobsetId: args[0], AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			for i, g := range resp.GetGroups() {
				if i > 0 {
					fmt.Fprintln(c.env.Stdout)
				}
				if r := g.GetRoot(); r != nil {
					fmt.Fprintf(c.env.Stdout, "%s %s (%d attributes)\n", c.paint(r.GetState()), r.GetDrvPath(), len(g.GetAttrs()))
					if s := r.GetDetail(); s != "" {
						fmt.Fprintf(c.env.Stdout, "  %s\n", oneLine(s, 100))
					}
				} else {
					fmt.Fprintf(c.env.Stdout, "%s (%d attributes)\n", c.paint("eval-error"), len(g.GetAttrs()))
				}
				for _, a := range g.GetAttrs() {
					fmt.Fprintf(c.env.Stdout, "  %s\t%s\n", a.GetAttr(), a.GetState())
				}
			}
			if len(resp.GetGroups()) == 0 {
				fmt.Fprintln(c.env.Stdout, "no failures")
			}
			return nil
		},
	}
}

func (c *cli) logsCmd() *cobra.Command {
	var follow bool
	var attempt uint32
	cmd := &cobra.Command{
		Use:   "logs DRV",
		Short: "print a build log (-f: follow a running build to its end)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), follow)
			defer cancel()
			s, err := cl.TailLog(ctx, &adminv1.TailLogRequest{DrvId: args[0], Attempt: attempt, Follow: follow})
			if err != nil {
				return err
			}
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if _, err := c.env.Stdout.Write(m.GetData()); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing while the attempt runs")
	cmd.Flags().Uint32Var(&attempt, "attempt", 0, "the attempt (default the latest)")
	return cmd
}

func (c *cli) watchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch JOBSET",
		Short: "follow a jobset until it concludes: a live progress line on a terminal, plain lines when piped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), true)
			defer cancel()
			s, err := cl.WatchJobset(ctx, &adminv1.WatchJobsetRequest{Id: args[0]})
			if err != nil {
				return err
			}
			out := c.env.Stdout
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					if c.env.IsTerminal && !c.json() {
						fmt.Fprintln(out)
					}
					return nil
				}
				if err != nil {
					return err
				}
				if c.json() {
					if err := c.printJSON(m); err != nil {
						return err
					}
					continue
				}
				line := progress(m.GetJobset())
				if c.env.IsTerminal {
					fmt.Fprintf(out, "\r\x1b[K%s", line)
				} else {
					fmt.Fprintln(out, line)
				}
			}
		},
	}
}

// progress is the watch line: built / running / queued / failed.
func progress(js *adminv1.Jobset) string {
	n := js.GetCounts()
	failed := n["failed"] + n["transitive-failure"] + n["interrupted"] + n["blocked"] + n["eval-error"]
	s := fmt.Sprintf("%s: built %d / running %d / queued %d / failed %d", js.GetJob(), n["succeeded"], n["building"], n["queued"]+n["buildable"], failed)
	if js.GetState() == "concluded" {
		s += " — concluded " + conclusion(js.GetConclusion())
	}
	return s
}

// action prints what an action recorded.
func (c *cli) action(a *adminv1.Action, what string) error {
	if c.json() {
		return c.printJSON(a)
	}
	if a.GetAlready() {
		fmt.Fprintf(c.env.Stdout, "%s already (fact %d)\n", what, a.GetSeq())
		return nil
	}
	fmt.Fprintf(c.env.Stdout, "%s (fact %d, as %s; read what follows with --after %d)\n", what, a.GetSeq(), a.GetActor().GetWho(), a.GetSeq())
	return nil
}

func (c *cli) retryCmd() *cobra.Command {
	return c.actionCmd("retry DRV", "build a failed or interrupted derivation again (what failed with it follows)", "retried",
		func(ctx context.Context, cl adminv1.AdminClient, id, reason string) (*adminv1.Action, error) {
			resp, err := cl.Retry(ctx, &adminv1.RetryRequest{DrvId: id, Reason: reason})
			return resp.GetAction(), err
		})
}

func (c *cli) cancelCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel jobset|change ID",
		Short: "cancel a jobset or a change that has not concluded",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var call actionCall
			switch args[0] {
			case "jobset":
				call = func(ctx context.Context, cl adminv1.AdminClient, id, reason string) (*adminv1.Action, error) {
					resp, err := cl.CancelJobset(ctx, &adminv1.CancelJobsetRequest{Id: id, Reason: reason})
					return resp.GetAction(), err
				}
			case "change":
				call = func(ctx context.Context, cl adminv1.AdminClient, id, reason string) (*adminv1.Action, error) {
					resp, err := cl.CancelChange(ctx, &adminv1.CancelChangeRequest{Id: id, Reason: reason})
					return resp.GetAction(), err
				}
			default:
				return fmt.Errorf("cancel %q: want jobset or change", args[0])
			}
			return c.act(cmd, call, args[1], reason, "cancelled "+args[0])
		},
		ValidArgs: []string{"jobset", "change"},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

// actionCall makes one action's call for the object id, and returns the
// fact it recorded.
type actionCall func(ctx context.Context, cl adminv1.AdminClient, id, reason string) (*adminv1.Action, error)

// actionCmd is a command that takes an action on one object (use names
// it, e.g. "retry DRV"), with --reason, and prints "<done> <id>" and the
// fact recorded.
func (c *cli) actionCmd(use, short, done string, call actionCall) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.act(cmd, call, args[0], reason, done)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

// act connects, makes call for id and prints what it recorded.
func (c *cli) act(cmd *cobra.Command, call actionCall, id, reason, done string) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(cmd.Context(), false)
	defer cancel()
	a, err := call(ctx, cl, id, reason)
	if err != nil {
		return err
	}
	return c.action(a, done+" "+id)
}

func (c *cli) restartCmd() *cobra.Command {
	return c.actionCmd("restart JOBSET", "build a concluded jobset's failures again and conclude it again", "restarted jobset",
		func(ctx context.Context, cl adminv1.AdminClient, id, reason string) (*adminv1.Action, error) {
			resp, err := cl.RestartJobset(ctx, &adminv1.RestartJobsetRequest{Id: id, Reason: reason})
			return resp.GetAction(), err
		})
}

func (c *cli) buildersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "builders",
		Short: "the builder processes alive (drained or not, running builds, slots), then the drained names no process runs under",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ListBuilders(ctx, &adminv1.ListBuildersRequest{AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			var rows [][]string
			for _, b := range resp.GetBuilders() {
				rows = append(rows, []string{orDash(b.GetHolder()), orDash(b.GetName()), orDash(b.GetHost()), when(b.GetLastSeen()), builderState(b),
					strconv.Itoa(len(b.GetRunningDrvIds())), slots(b), orDash(b.GetDrainedBy().GetWho())})
			}
			return c.table([]string{"HOLDER", "NAME", "HOST", "LAST SEEN", "STATE", "RUNNING", "SLOTS", "DRAINED BY"}, rows)
		},
	}
}

func (c *cli) queuesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "queues",
		Short: "build requests waiting, per system and pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ListQueues(ctx, &adminv1.ListQueuesRequest{})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			var rows [][]string
			for _, q := range resp.GetQueues() {
				rows = append(rows, []string{q.GetSystem(), q.GetPool(), strconv.FormatUint(q.GetWaiting(), 10)})
			}
			return c.table([]string{"SYSTEM", "POOL", "WAITING"}, rows)
		},
	}
}
