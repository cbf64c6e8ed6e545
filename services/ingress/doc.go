// Package ingress is the scheduler's first tier: it keeps the dependency
// graph of every discovered derivation as a read model and decides, as the
// derivation facts arrive, which derivations become Buildable, which
// succeed without a build, and which fail or block because of a dependency.
//
// Buildability is a counter, not a query: each derivation keeps the number
// of its dependencies that have not succeeded, decremented when one does,
// so a success costs work proportional to its direct dependents.
//
// Ingress is a single writer per deployment: it folds ekaci.evt.drv.> in
// stream order and appends its decisions through the projection outbox,
// each guarded by the aggregate's last sequence.
package ingress
