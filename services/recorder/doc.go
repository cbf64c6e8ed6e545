// Package recorder turns builders' reports into build-state transitions and
// concludes jobsets and changes.
//
// A report is a builder's observation; the recorder decides what it means
// through the buildstate package: a first failure or interruption becomes
// FailedRetry followed by a re-queue, a later one Completed(Failure) or
// Interrupted. It then folds the settling facts into a read model of
// jobsets and concludes each jobset once every attribute's derivation is
// settled — a jobset with nothing to build concludes at once — and each
// change once all its jobsets have.
package recorder
