// Package buildstate owns the build-state machine of a derivation: its
// states, the transitions each fact may make, and the fold of a derivation's
// history into its current state.
//
// It is pure: no I/O, no clocks. A stage that appends a derivation fact
// either asks Next first and appends only when Next accepts, or appends
// guarded on the sequence of the fact that makes it legal (the router's
// unsatisfiable interruption on the buildable fact, the builder's
// build_started on the buildable fact, the recorder's success on
// build_started): the log refuses the append when anything happened since,
// so an illegal transition never reaches the log either way. Projections
// fold with the same Next, so the log and every read model agree on what a
// history means.
//
//	(none) ─discovered─▶ Queued ─buildable─▶ Buildable ─build_started─▶ Building
//	Building ─build_succeeded─▶ Succeeded                  (Completed, final)
//	Building ─build_failed_retry─▶ FailedRetry ─requeued─▶ Queued   (once)
//	Building ─build_failed─▶ Failed                        (Completed, final)
//	Queued ─dependency_failed─▶ TransitiveFailure ─requeued─▶ Queued
//	Queued ─blocked─▶ Blocked ─requeued─▶ Queued
//	Queued|Buildable|Building ─interrupted─▶ Interrupted(kind)
//	Interrupted|Blocked ─requeued(needed-again)─▶ Queued  (a later jobset needs it;
//	                                      attempts count on, the retry budget stays spent)
//	Queued|Buildable ─build_succeeded(cached)─▶ Succeeded  (outputs already valid)
//	Failed|Interrupted ─requeued(retried)─▶ Queued   (someone asked: DecideRetry;
//	                                      the automatic retry is available again)
//	Failed ─downstream_failed─▶ Failed   (and each derivation it lists:
//	                                      Queued ─▶ TransitiveFailure)
//
// A downstream_failed fact lives on the failed derivation's aggregate and
// lists the derivations its failure reached; eventlog decodes it into the
// dependency_failed each of them folds (eventlog.Record.Transitions), so
// no reader sees the fact without them. Their own subjects then carry no
// event of that transition: the read models hold it, and the guards of
// later facts on them still expect their own last sequence.
package buildstate
