package ctl

import (
	"strconv"

	"github.com/spf13/cobra"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
)

func (c *cli) drainCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "drain BUILDER",
		Short: "stop a builder taking new work (its running builds finish)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.DrainBuilder(ctx, &adminv1.DrainBuilderRequest{Name: args[0], Reason: reason})
			if err != nil {
				return err
			}
			return c.action(resp.GetAction(), "drained "+args[0])
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

func (c *cli) resumeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "resume BUILDER",
		Short: "let a drained builder take work again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ResumeBuilder(ctx, &adminv1.ResumeBuilderRequest{Name: args[0], Reason: reason})
			if err != nil {
				return err
			}
			return c.action(resp.GetAction(), "resumed "+args[0])
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

// builderState is a builder's STATE column: active, draining (drained,
// builds still running) or drained.
func builderState(b *adminv1.Builder) string {
	switch {
	case !b.GetDrained():
		return "active"
	case b.GetRunning() > 0:
		return "draining"
	}
	return "drained"
}

func slots(b *adminv1.Builder) string {
	if b.GetSlots() == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(b.GetSlots()), 10)
}
