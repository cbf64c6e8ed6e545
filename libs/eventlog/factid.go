package eventlog

import (
	"strconv"
)

// Fact ids: the one place each event id (and work message id) is spelled.
//
// An id is the message's Nats-Msg-Id, so the stream's de-duplication drops
// a second message with the same id within its duplicate window: the same
// id must mean "the same fact, again" (a redelivery, a retry after a lost
// acknowledgement, a replay of a read model), and two different facts must
// never share one, because the second would be acknowledged as stored
// without being stored. De-duplication is per stream, not per aggregate:
// every id therefore starts with its fact's prefix, and names the
// aggregate it is about.
//
// Past the duplicate window an id no longer de-duplicates; the append's
// guard (ExpectLast) is what makes a late repeat land nowhere. The id is
// still the first line of defence, and the formats below are in users'
// logs: changing one would let a replay in the window land twice. Keep
// them as they are; add a new function for a new fact.

// Change facts.

// WebhookRequestedID is the change_requested id of a GitHub webhook
// delivery: unique per X-GitHub-Delivery, so a redelivery of the same
// delivery is a repeat and a new delivery for the same pull request head is
// a new request (the change's guard joins it to the change under way).
// Without a delivery id, the change id stands in: every such request for
// the change is then one repeat.
func WebhookRequestedID(delivery, changeID string) string {
	if delivery == "" {
		return "gh-" + changeID
	}
	return "gh-" + delivery
}

// RequestedID is the change_requested id of `ekaci run` for a change
// (ChangeID): submitting the same change again is a repeat.
func RequestedID(changeID string) string { return "requested-" + changeID }

// AttemptRequestedID is the id of the request that starts a change's
// attempt: attempt 0 keeps the request's own id (WebhookRequestedID,
// RequestedID); a later attempt (after a failed checkout) gets
// "-attempt-N" appended, so that de-duplication never takes a new attempt
// for a repeat of the old one's request.
func AttemptRequestedID(requestID string, attempt int) string {
	if attempt == 0 {
		return requestID
	}
	return requestID + "-attempt-" + strconv.Itoa(attempt)
}

// CheckedOutID is a change attempt's change_checked_out: one per change
// id (an attempt has its own change id), so a repeat is the gitter's retry.
func CheckedOutID(changeID string) string { return "checked-out-" + changeID }

// CheckoutFailedID is a change attempt's change_checkout_failed, whether
// the checkout refused the request or the gitter gave up on it: either is
// the one outcome of the attempt's checkout.
func CheckoutFailedID(changeID string) string { return "checkout-failed-" + changeID }

// ConfigReadID is a change's change_config_read, configured or not: the
// reader reads a change's configuration once.
func ConfigReadID(changeID string) string { return "config-read-" + changeID }

// ConfigInvalidID is a change's change_config_invalid: the other outcome
// of reading its configuration, once per change.
func ConfigInvalidID(changeID string) string { return "config-invalid-" + changeID }

// ConcludedID is the conclusion of a jobset (jobset_concluded) or of a
// change (change_concluded): each concludes once. Jobset and change ids
// are digests of different domains (JobsetID, ChangeID), so the shared
// prefix never makes a jobset's conclusion a repeat of a change's.
func ConcludedID(aggregateID string) string { return "concluded-" + aggregateID }

// Jobset facts.

// JobsetCreatedID is a jobset's jobset_created: a jobset (JobsetID of a
// change and a job) is created once.
func JobsetCreatedID(jobsetID string) string { return "created-" + jobsetID }

// AttrsListedID is part number part of a jobset's jobset_attrs_listed
// (a job too large for one message): one per part.
func AttrsListedID(jobsetID string, part uint32) string {
	return "attrs-" + jobsetID + "-" + strconv.FormatUint(uint64(part), 10)
}

// EvaluatedID is a jobset's jobset_evaluated: a jobset is evaluated once.
func EvaluatedID(jobsetID string) string { return "evaluated-" + jobsetID }

// EvalFailedID is a jobset's jobset_eval_failed, whether the evaluation
// failed or the evaluator gave up on it: the one other outcome of its
// evaluation.
func EvalFailedID(jobsetID string) string { return "eval-failed-" + jobsetID }

// Derivation facts.

// DiscoveredID is a derivation's drv_discovered: a derivation (DrvID) is
// discovered once, by whichever evaluation reaches it first.
func DiscoveredID(drvID string) string { return "discovered-" + drvID }

// CachedID is the drv_build_succeeded of a derivation whose outputs were
// valid when it was discovered: it can happen once.
func CachedID(drvID string) string { return "cached-" + drvID }

// BuildableID is a derivation's drv_buildable for one attempt: each
// attempt becomes buildable once.
func BuildableID(drvID string, attempt uint32) string { return attempted("buildable-", drvID, attempt) }

// DependencyFailedID is a derivation's drv_dependency_failed, named by
// the sequence of the record that decided it (the derivation's discovery,
// or its dependency's failure): a replay of that record is a repeat.
func DependencyFailedID(drvID string, causeSeq uint64) string {
	return sequenced("depfailed-", drvID, causeSeq)
}

// BlockedID is a derivation's drv_blocked, named like DependencyFailedID
// by the sequence of the record that decided it.
func BlockedID(drvID string, causeSeq uint64) string { return sequenced("blocked-", drvID, causeSeq) }

// DownstreamFailedID is the batched drv_downstream_failed appended on a
// failed derivation, named by the failure's sequence: a replay of the
// failure is a repeat.
func DownstreamFailedID(drvID string, failureSeq uint64) string {
	return sequenced("downstream-", drvID, failureSeq)
}

// CauseClearedID is the drv_requeued (reason cause-cleared) of a derivation
// whose blocking cause succeeded, named by the derivation's last sequence
// when it was decided: one re-queue per state the derivation was in.
func CauseClearedID(drvID string, lastSeq uint64) string {
	return sequenced("cleared-", drvID, lastSeq)
}

// NeededAgainID is the drv_requeued (reason needed-again) of a settled
// derivation a later jobset needs, named like CauseClearedID by its last
// sequence.
func NeededAgainID(drvID string, lastSeq uint64) string { return sequenced("needed-", drvID, lastSeq) }

// RetryID is the drv_requeued (reason retry) that follows a failed_retry,
// named by the attempt it starts: each attempt is re-queued once.
func RetryID(drvID string, nextAttempt uint32) string { return attempted("retry-", drvID, nextAttempt) }

// StartedID is a derivation's drv_build_started for one attempt by one
// holder. The holder is in the id: another holder's start of the same
// attempt is then no repeat (which would read as its own success) but a
// guard conflict, and the builder sees who holds the attempt.
func StartedID(drvID string, attempt uint32, holder string) string {
	return attempted("started-", drvID, attempt) + "-" + holder
}

// OutcomeID is the fact that ends one attempt of a derivation as the
// recorder decides it from a report: fact is the fact's subject token
// (build_succeeded, build_failed, build_failed_retry, interrupted; see
// Address). An attempt ends once: the fast path (a success right after
// its start) and the decided path spell the same id, so the two
// de-duplicate against each other, and a report of an interruption and
// the recorder's giving up on one name the same fact.
func OutcomeID(fact, drvID string, attempt uint32) string {
	return attempted(fact+"-", drvID, attempt)
}

// UnsatisfiableID is the drv_interrupted (unsatisfiable) the router
// appends for an attempt no builder can take: once per attempt.
func UnsatisfiableID(drvID string, attempt uint32) string {
	return attempted("unsatisfiable-", drvID, attempt)
}

// RouteFailedID is the drv_interrupted (infrastructure) the router
// appends when it gives up queueing an attempt's build request: once per
// attempt.
func RouteFailedID(drvID string, attempt uint32) string {
	return attempted("route-failed-", drvID, attempt)
}

// Actions: facts someone asked for (an operator through the admin API,
// GitHub), each carrying an Actor.

// RetriedID is the drv_requeued (reason retried) of a derivation someone
// asked to build again, directly or by restarting a jobset that needs it,
// named by the attempt it starts: two asks for the same attempt are one.
func RetriedID(drvID string, nextAttempt uint32) string {
	return attempted("retried-", drvID, nextAttempt)
}

// ChangeCancelledID is a change's change_cancelled: a change is cancelled
// once.
func ChangeCancelledID(changeID string) string { return "cancelled-" + changeID }

// JobsetCancelledID is a jobset's jobset_cancelled in its round (0 before
// any restart, then the restart's round): once per round.
func JobsetCancelledID(jobsetID string, round uint32) string {
	return attempted("cancelled-", jobsetID, round)
}

// RestartedID is a jobset's jobset_restarted of the given round (from 1):
// each round starts once.
func RestartedID(jobsetID string, round uint32) string {
	return attempted("restarted-", jobsetID, round)
}

// ConcludedAgainID is the conclusion of a jobset or change in a later
// round (a jobset restarted; ConcludedID is round 0's): each round
// concludes once.
func ConcludedAgainID(aggregateID string, round uint32) string {
	return attempted("concluded-", aggregateID, round)
}

// DrvCancelledID is the drv_interrupted (cancelled) ingress appends for a
// derivation only cancelled jobsets needed, named by the derivation's last
// sequence when it was decided.
func DrvCancelledID(drvID string, lastSeq uint64) string {
	return sequenced("drv-cancelled-", drvID, lastSeq)
}

// Check facts.

// CheckQueuedID is a check's check_queued: the reader queues each check
// of a change (CheckID) once.
func CheckQueuedID(checkID string) string { return "check-queued-" + checkID }

// CheckStartedID is a check's check_started for one attempt: each attempt
// starts once.
func CheckStartedID(checkID string, attempt uint32) string {
	return attempted("check-started-", checkID, attempt)
}

// CheckEndedID is the fact that ends a check (check_succeeded,
// check_failed or check_interrupted): a check ends once, whichever
// attempt ends it and whether the checker ran it or gave up on it.
func CheckEndedID(checkID string) string { return "check-ended-" + checkID }

// Work message ids (WorkStream).

// BuildRequestID is the message id of an attempt's build request: the
// router queues each attempt once, so a repeat (a redelivered buildable)
// is dropped rather than built twice.
func BuildRequestID(drvID string, attempt uint32) string { return attempted("build-", drvID, attempt) }

// ReportID is the message id of a builder's own report of an attempt's
// outcome: one per attempt.
func ReportID(drvID string, attempt uint32) string { return attempted("report-", drvID, attempt) }

// GaveUpReportID is the message id of the report a builder sends when it
// gives up on an attempt's request: its own id, so that it and a real
// outcome never drop one another as repeats.
func GaveUpReportID(drvID string, attempt uint32) string { return attempted("gaveup-", drvID, attempt) }

// DeathReportID is the message id of the report that a builder holding an
// attempt died, per dead holder: a real outcome and a report of death
// must never drop one another as repeats.
func DeathReportID(drvID string, attempt uint32, holder string) string {
	return attempted("death-", drvID, attempt) + "-" + holder
}

func attempted(prefix, drvID string, attempt uint32) string {
	return prefix + drvID + "-" + strconv.FormatUint(uint64(attempt), 10)
}

func sequenced(prefix, drvID string, seq uint64) string {
	return prefix + drvID + "-" + strconv.FormatUint(seq, 10)
}

// GitHub facts.

// InstallationChangedID is the github_installation_changed recorded for
// one webhook delivery (X-GitHub-Delivery): a redelivery is a repeat.
func InstallationChangedID(delivery string) string { return "gh-installation-" + delivery }

// Contributor and builder facts. n is the aggregate's fact count after
// the fact (its version): each decision appends guarded by the count
// before it, so the same n is the same decision, asked again.

// ContributorApprovedID is the contributor_approved that makes the n-th
// fact of a contributor.
func ContributorApprovedID(contributorID string, n int) string {
	return "approved-" + contributorID + "-" + strconv.Itoa(n)
}

// ContributorRevokedID is the contributor_revoked that makes the n-th
// fact of a contributor.
func ContributorRevokedID(contributorID string, n int) string {
	return "revoked-" + contributorID + "-" + strconv.Itoa(n)
}

// BuilderDrainedID is the builder_drained that makes the n-th fact of a
// builder.
func BuilderDrainedID(builderID string, n int) string {
	return "drained-" + builderID + "-" + strconv.Itoa(n)
}

// BuilderResumedID is the builder_resumed that makes the n-th fact of a
// builder.
func BuilderResumedID(builderID string, n int) string {
	return "resumed-" + builderID + "-" + strconv.Itoa(n)
}
