// Package projection folds events from the event log into bbolt read
// models, and lets a fold react by appending new events (its decisions,
// collected in an Decisions). It promises that a model's rows and position
// commit together, so no event is skipped or folded into the file twice;
// that a model which has folded events the log no longer has is rebuilt
// or refused, never trusted; and that every decision is acknowledged by
// the log before the position that covers it is committed.
//
// A Runner reads the log with an ordered consumer from the last applied
// sequence and folds batches of events into one bbolt write transaction,
// committed with the new position at a checkpoint: when no event came for
// 20 ms, or every second (or 50,000 events) while it does not. A crash replays
// what was not committed rather than skipping it, and Apply sees each
// event's stream sequence, so nothing is folded twice. Events a fold
// decides to append are appended right after their batch, before the
// checkpoint that covers it, and a checkpoint is committed only once all
// of them are acknowledged: a crash in between folds the batch again, and
// since folds are deterministic it decides the same facts with the same
// ids and sequence guards, which the log refuses as repeats. Decisions
// are kept in memory only, never in the file.
//
// The checkpoint also names the event at the position (its id and the
// time the log stored it), and Run checks, before folding, that the log
// still has that event there: a log that lost acknowledged events (a
// power loss on a server that does not fsync every write), or another log,
// would otherwise have its new events at sequences the model thinks it
// folded, and they would be skipped for good. A Versioned model is then
// rebuilt from the log; any other refuses to run (ErrAheadOfLog).
//
// A transient NATS failure while appending decisions (a disconnect, a
// lost acknowledgement, a leader moving: eventlog.Transient) is retried
// with back-off and reported through the log's health hook, not returned:
// in the all-in-one a returned error stops every stage.
//
// A read model is disposable: delete its file and a new Runner rebuilds it
// from the log.
package projection
