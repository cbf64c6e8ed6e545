package ctl

import (
	"context"

	"github.com/spf13/cobra"

	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
)

func (c *cli) approveCmd() *cobra.Command {
	return c.actionCmd("approve LOGIN", "let a GitHub login's pull requests run without a maintainer's approval", "approved",
		func(ctx context.Context, cl adminv1.AdminClient, login, reason string) (*adminv1.Action, error) {
			resp, err := cl.ApproveContributor(ctx, &adminv1.ApproveContributorRequest{Login: login, Reason: reason})
			return resp.GetAction(), err
		})
}

func (c *cli) revokeCmd() *cobra.Command {
	return c.actionCmd("revoke LOGIN", "take back an approval given with approve", "revoked",
		func(ctx context.Context, cl adminv1.AdminClient, login, reason string) (*adminv1.Action, error) {
			resp, err := cl.RevokeContributor(ctx, &adminv1.RevokeContributorRequest{Login: login, Reason: reason})
			return resp.GetAction(), err
		})
}

func (c *cli) approvalsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "approvals",
		Short: "the logins approved or revoked through the API, and the webhook's --github-approved (CONFIGURED) when the server knows them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd.Context(), false)
			defer cancel()
			resp, err := cl.ListApprovals(ctx, &adminv1.ListApprovalsRequest{AfterSeq: c.o.after})
			if err != nil {
				return err
			}
			if c.json() {
				return c.printJSON(resp)
			}
			var rows [][]string
			for _, a := range resp.GetApprovals() {
				state := "-" // configured only: no fact names it
				switch {
				case a.GetApproved():
					state = "approved"
				case a.GetSeq() != 0:
					state = "revoked"
				}
				configured := "-"
				if a.GetConfigured() {
					configured = "yes"
				}
				rows = append(rows, []string{a.GetLogin(), state, configured, orDash(a.GetActor().GetWho()), orDash(oneLine(a.GetActor().GetReason(), 40)), when(a.GetAt())})
			}
			return c.table([]string{"LOGIN", "STATE", "CONFIGURED", "BY", "REASON", "AT"}, rows)
		},
	}
}
