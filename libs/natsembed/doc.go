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
// afford to lose; production runs the 3-node cluster in deploy/nats.
//
// nats-server itself does not lock its store directory (v2.15.2): two
// servers on one store corrupt it without a word. Start therefore takes an
// exclusive lock on DataDir/nats.lock for the server's lifetime and refuses
// a store another natsembed server holds.
package natsembed
