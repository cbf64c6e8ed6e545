// Package ingress is the scheduler's first tier: it keeps the dependency
// graph of every discovered derivation as a read model and decides, as the
// derivation facts arrive, which derivations become Buildable, which
// succeed without a build, and which fail or block because of a dependency.
//
// Buildability is a counter, not a query: each derivation keeps the number
// of its dependencies that have not succeeded, decremented when one does,
// so a success costs work proportional to its direct dependents.
//
// Settled is not final for every later change: when a jobset's attributes
// are listed (jobset_attrs_listed, jobset_evaluated), every derivation of
// their closure that is Interrupted or Blocked is queued again
// (drv_requeued, reason needed-again), inputs first, and what an
// interrupted derivation blocked follows it when it is queued again
// (cause-cleared). A failed build and its transitive failures stay cached.
// Each attribute list is folded once: a replay decides nothing again.
//
// Memory follows the work in flight, not the history: a derivation is in
// memory while it is not settled, or while something in memory needs it
// (an unsettled dependent, a verdict naming it on its way); the rest stay
// in bbolt and are read back when a later fold needs one. Opening the
// model loads the unsettled derivations and their inputs only.
//
// Ingress is a single writer per deployment: it folds ekaci.evt.drv.> and
// ekaci.evt.jobset.> in stream order and appends its decisions through the
// projection's decisions, each guarded by the aggregate's last sequence.
package ingress
