package ctl

import (
	"context"

	"strconv"

	"github.com/spf13/cobra"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
)

func (c *cli) drainCmd() *cobra.Command {
	return c.actionCmd("drain BUILDER", "stop a builder taking new work (its running builds finish)", "drained",
		func(ctx context.Context, cl adminv1.AdminClient, name, reason string) (*adminv1.Action, error) {
			resp, err := cl.DrainBuilder(ctx, &adminv1.DrainBuilderRequest{Name: name, Reason: reason})
			return resp.GetAction(), err
		})
}

func (c *cli) resumeCmd() *cobra.Command {
	return c.actionCmd("resume BUILDER", "let a drained builder take work again", "resumed",
		func(ctx context.Context, cl adminv1.AdminClient, name, reason string) (*adminv1.Action, error) {
			resp, err := cl.ResumeBuilder(ctx, &adminv1.ResumeBuilderRequest{Name: name, Reason: reason})
			return resp.GetAction(), err
		})
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
