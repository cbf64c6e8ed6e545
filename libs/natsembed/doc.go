// Package natsembed runs the NATS JetStream server inside the all-in-one
// ekaci binary: one node, its store under a data dir, its logs through
// zerolog.
//
// Start returns only once the server accepts connections with JetStream
// enabled, or one clear error (ErrDataDir, ErrPortInUse, ErrStoreLocked,
// ErrStart) saying what is wrong and how to fix it. Nothing is left
// running after an error.
//
// Durability trade-off: Config.SyncAlways is false by default here. Every
// publish is written to the store file (write(2)) before it is
// acknowledged, so a crashed or killed ekaci loses nothing; but the file is
// fsynced only every 2 minutes (nats-server's default sync_interval), so a
// power loss or kernel crash can lose acknowledged events written since the
// last fsync. The all-in-one is a single node on a developer machine or a
// small box, where that window is accepted to keep publishes fast. Set
// SyncAlways (fsync before every acknowledgement, nats-server's
// `sync_interval: always`) when the embedded server holds data you cannot
// afford to lose; production runs the 3-node cluster in deploy/nats. It
// costs 10 to 17 times the time of an append: on a shared 2-core VM,
// 10,260 appends/s one at a time and 26,872/s pipelined by default against
// 1,019/s and 1,596/s with SyncAlways (BenchmarkAppend). ekaci's read
// models check at start that they are not ahead of the log (libs/projection),
// so lost events cost their decisions, never later events.
//
// The JetStream store limit is explicit (Config.MaxStore, default
// DefaultMaxStore), never nats-server's share of the disk free at start:
// ekaci's streams reserve their byte budgets against it.
//
// nats-server itself does not lock its store directory (v2.15.2): two
// servers on one store corrupt it without a word. Start therefore takes an
// exclusive lock on DataDir/nats.lock for the server's lifetime and refuses
// a store another natsembed server holds.
package natsembed
