package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
)

func (c *cli) rebuildCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rebuild-readmodel NAME",
		Short: "fold a read model of the server afresh from the event log and swap it in (NAME: admin)",
		Long: `rebuild-readmodel folds a read model of the server afresh from the event
log, beside the serving one, and swaps it in once it has passed what the
serving one had folded; reads go on meanwhile. The admin server holds one
read model, "admin" (changes, jobsets, derivations, approvals, drains);
the other stages rebuild theirs when their file is deleted, at their next
start.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"admin"},
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			// As long as the fold takes: no --timeout.
			ctx, cancel := c.ctx(cmd.Context(), true)
			defer cancel()
			resp, err := cl.RebuildReadModel(ctx, &adminv1.RebuildReadModelRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			_, err = fmt.Fprintf(c.env.Stdout, "rebuilt %s from the event log: %d rows, folded to fact %d\n", resp.GetName(), resp.GetRows(), resp.GetPosition())
			return err
		},
	}
}
