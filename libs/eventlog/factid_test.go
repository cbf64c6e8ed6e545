package eventlog_test

import (
	"testing"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// TestFactIDFormats pins every id's exact spelling: ids already in users'
// logs must keep de-duplicating against new appends, so a change here is a
// change of contract, never a refactoring.
func TestFactIDFormats(t *testing.T) {
	const (
		change = "0123456789abcdef0123"
		jobset = "fedcba9876543210fedc"
		drv    = "0c4xwb6jld1f6dmvyzylk7dfs5g1x8cq"
		holder = "host-1a2b3c4d"
	)
	for _, row := range []struct {
		name string
		got  string
		want string
	}{
		{"WebhookRequestedID delivery", eventlog.WebhookRequestedID("d4", change), "gh-d4"},
		{"WebhookRequestedID no delivery", eventlog.WebhookRequestedID("", change), "gh-" + change},
		{"RequestedID", eventlog.RequestedID(change), "requested-" + change},
		{"InstallationChangedID", eventlog.InstallationChangedID("d5"), "gh-installation-d5"},
		{"AttemptRequestedID first", eventlog.AttemptRequestedID("gh-d1", 0), "gh-d1"},
		{"AttemptRequestedID later", eventlog.AttemptRequestedID("gh-d1", 2), "gh-d1-attempt-2"},
		{"CheckedOutID", eventlog.CheckedOutID(change), "checked-out-" + change},
		{"CheckoutFailedID", eventlog.CheckoutFailedID(change), "checkout-failed-" + change},
		{"ConfigReadID", eventlog.ConfigReadID(change), "config-read-" + change},
		{"ConfigInvalidID", eventlog.ConfigInvalidID(change), "config-invalid-" + change},
		{"ConcludedID change", eventlog.ConcludedID(change), "concluded-" + change},
		{"ConcludedID jobset", eventlog.ConcludedID(jobset), "concluded-" + jobset},
		{"JobsetCreatedID", eventlog.JobsetCreatedID(jobset), "created-" + jobset},
		{"AttrsListedID", eventlog.AttrsListedID(jobset, 3), "attrs-" + jobset + "-3"},
		{"EvaluatedID", eventlog.EvaluatedID(jobset), "evaluated-" + jobset},
		{"EvalFailedID", eventlog.EvalFailedID(jobset), "eval-failed-" + jobset},
		{"DiscoveredID", eventlog.DiscoveredID(drv), "discovered-" + drv},
		{"CachedID", eventlog.CachedID(drv), "cached-" + drv},
		{"BuildableID", eventlog.BuildableID(drv, 2), "buildable-" + drv + "-2"},
		{"DependencyFailedID", eventlog.DependencyFailedID(drv, 1234567890123), "depfailed-" + drv + "-1234567890123"},
		{"BlockedID", eventlog.BlockedID(drv, 17), "blocked-" + drv + "-17"},
		{"DownstreamFailedID", eventlog.DownstreamFailedID(drv, 18), "downstream-" + drv + "-18"},
		{"CauseClearedID", eventlog.CauseClearedID(drv, 19), "cleared-" + drv + "-19"},
		{"NeededAgainID", eventlog.NeededAgainID(drv, 20), "needed-" + drv + "-20"},
		{"RetryID", eventlog.RetryID(drv, 2), "retry-" + drv + "-2"},
		{"StartedID", eventlog.StartedID(drv, 1, holder), "started-" + drv + "-1-" + holder},
		{"OutcomeID succeeded", eventlog.OutcomeID("build_succeeded", drv, 1), "build_succeeded-" + drv + "-1"},
		{"OutcomeID failed", eventlog.OutcomeID("build_failed", drv, 2), "build_failed-" + drv + "-2"},
		{"OutcomeID failed retry", eventlog.OutcomeID("build_failed_retry", drv, 1), "build_failed_retry-" + drv + "-1"},
		{"OutcomeID interrupted", eventlog.OutcomeID("interrupted", drv, 4294967295), "interrupted-" + drv + "-4294967295"},
		{"UnsatisfiableID", eventlog.UnsatisfiableID(drv, 1), "unsatisfiable-" + drv + "-1"},
		{"RouteFailedID", eventlog.RouteFailedID(drv, 1), "route-failed-" + drv + "-1"},
		{"BuildRequestID", eventlog.BuildRequestID(drv, 1), "build-" + drv + "-1"},
		{"ReportID", eventlog.ReportID(drv, 1), "report-" + drv + "-1"},
		{"GaveUpReportID", eventlog.GaveUpReportID(drv, 1), "gaveup-" + drv + "-1"},
		{"DeathReportID", eventlog.DeathReportID(drv, 1, holder), "death-" + drv + "-1-" + holder},
		{"RetriedID", eventlog.RetriedID(drv, 3), "retried-" + drv + "-3"},
		{"ChangeCancelledID", eventlog.ChangeCancelledID(change), "cancelled-" + change},
		{"JobsetCancelledID", eventlog.JobsetCancelledID(jobset, 0), "cancelled-" + jobset + "-0"},
		{"RestartedID", eventlog.RestartedID(jobset, 1), "restarted-" + jobset + "-1"},
		{"ConcludedAgainID", eventlog.ConcludedAgainID(jobset, 1), "concluded-" + jobset + "-1"},
		{"DrvCancelledID", eventlog.DrvCancelledID(drv, 21), "drv-cancelled-" + drv + "-21"},
		{"ContributorApprovedID", eventlog.ContributorApprovedID("octocat", 1), "approved-octocat-1"},
		{"ContributorRevokedID", eventlog.ContributorRevokedID("octocat", 2), "revoked-octocat-2"},
		{"BuilderDrainedID", eventlog.BuilderDrainedID("local", 1), "drained-local-1"},
		{"BuilderResumedID", eventlog.BuilderResumedID("local", 2), "resumed-local-2"},
	} {
		t.Run(row.name, func(t *testing.T) {
			if row.got != row.want {
				t.Errorf("got %q, want %q", row.got, row.want)
			}
		})
	}
}

// TestFactIDsDistinct: de-duplication is per stream, so two different
// facts about the same aggregate and attempt must never share an id.
func TestFactIDsDistinct(t *testing.T) {
	const drv, change = "0c4xwb6jld1f6dmvyzylk7dfs5g1x8cq", "0123456789abcdef0123"
	ids := []string{
		eventlog.RequestedID(change), eventlog.WebhookRequestedID("", change), eventlog.CheckedOutID(change),
		eventlog.CheckoutFailedID(change), eventlog.ConfigReadID(change), eventlog.ConfigInvalidID(change),
		eventlog.ConcludedID(change),
		eventlog.DiscoveredID(drv), eventlog.CachedID(drv), eventlog.BuildableID(drv, 1),
		eventlog.DependencyFailedID(drv, 1), eventlog.BlockedID(drv, 1), eventlog.DownstreamFailedID(drv, 1),
		eventlog.CauseClearedID(drv, 1), eventlog.NeededAgainID(drv, 1), eventlog.RetryID(drv, 1),
		eventlog.StartedID(drv, 1, "h"), eventlog.OutcomeID("build_succeeded", drv, 1),
		eventlog.OutcomeID("build_failed", drv, 1), eventlog.OutcomeID("build_failed_retry", drv, 1),
		eventlog.OutcomeID("interrupted", drv, 1), eventlog.UnsatisfiableID(drv, 1), eventlog.RouteFailedID(drv, 1),
		eventlog.BuildRequestID(drv, 1), eventlog.ReportID(drv, 1), eventlog.GaveUpReportID(drv, 1),
		eventlog.DeathReportID(drv, 1, "h"),
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("two facts share the id %q", id)
		}
		seen[id] = true
	}
}
