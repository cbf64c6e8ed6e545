// Package action decides the actions people and outside systems take on
// ekaci's work and appends each as a past-tense fact carrying its Actor
// (who, through what, why; when is the event's time):
//
//   - Retry: a failed or interrupted derivation is queued again
//     (drv_requeued, reason retried); ingress queues the derivations that
//     failed with it (transitive failures) after it.
//   - CancelJobset: jobset_cancelled. The jobset concludes cancelled once
//     its evaluation is recorded; ingress interrupts (cancelled) what it
//     needs that is not settled and that no other live jobset needs, so
//     it is not built for nothing.
//   - CancelChange: change_cancelled (the change concludes cancelled at
//     once), then a jobset_cancelled for each of its jobsets, including
//     those its configuration names but the reader has not created yet
//     (their creation is then refused).
//   - Restart: jobset_restarted on a concluded jobset. Ingress queues
//     again what it needs that failed, was interrupted or blocked; the
//     recorder opens the jobset and its change again, and each concludes
//     again under a new id.
//   - Approve and Revoke: contributor_approved and contributor_revoked on
//     a GitHub login (eventlog.ContributorID): the webhook, when it
//     requires approval, lets the pull requests of an approved login run
//     without a maintainer's click. Contributor is the fold of them.
//   - Drain and Resume: builder_drained and builder_resumed on a builder
//     name (eventlog.BuilderID): the builder processes of that name stop
//     taking new work and let their running builds finish, then take work
//     again. Builder is the fold of them.
//
// Each decision reads the aggregate's own history from the log (not a
// read model, which may lag), checks it with libs/buildstate, and appends
// guarded by the aggregate's last sequence, deciding again on a conflict.
// Asking twice is harmless: the fact ids name what is asked (the attempt
// a retry starts, the round a cancel or restart belongs to), so a repeat
// is de-duplicated, and a repeat of a cancel that landed answers as
// Done with its sequence.
package action
