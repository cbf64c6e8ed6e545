// Package projection folds events from the event log into bbolt read
// models, and lets a fold react by appending new events through an outbox.
//
// A Runner reads the log with an ordered consumer from the last applied
// sequence, applies a batch of events in one bbolt transaction, and stores
// the new position in that same transaction: a crash replays the batch
// rather than skipping it, so Apply must be idempotent (it is handed the
// stream sequence and can compare). Events a fold decides to append are
// written to the outbox bucket in the same transaction and published after
// the commit; a crash between the two republishes them on restart, where
// the log's de-duplication and expected-sequence guards make that harmless.
//
// A read model is disposable: delete its file and a new Runner rebuilds it
// from the log.
package projection
