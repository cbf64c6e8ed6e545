// Package recorder holds two deciders of the pipeline's outcomes.
//
//   - The report decider (reports.go) decides what a builder's report means
//     for the derivation: succeeded, failed, or failed once and re-queued.
//   - The conclusions projection (conclusions.go) decides when a jobset, and
//     then its change, is concluded, and with what verdict.
//
// A report is a builder's observation; the recorder decides what it means
// through the buildstate package: a first failure or interruption becomes
// FailedRetry followed by a re-queue, a later one Completed(Failure) or
// Interrupted. The conclusions projection folds the settling facts into a
// read model of jobsets (store.go; one fold per aggregate, fold_*.go) and
// concludes each jobset once every attribute's derivation is settled — a
// jobset with nothing to build concludes at once — and each change once all
// its jobsets have (fold_change.go). The jobset verdict is in verdict.go.
package recorder
