// Package eventlog appends ekaci's facts to JetStream and reads them back in
// order.
//
// Streams (provisioned idempotently by Provision):
//
//	EKACI_EVENTS  ekaci.evt.<aggregate>.<id>.<fact>   the event log: limits retention, file storage,
//	                                                   discard new within a reserved byte budget
//	                                                   (16 GiB), delete and purge denied, no max age
//	EKACI_WORK    ekaci.work.build.<system>.<class>   builds waiting for a builder (work queue,
//	              ekaci.work.report.<drv-id>          1 GiB, discard new); builders' reports,
//	                                                   consumed by the recorder
//	EKACI_LOGS    ekaci.log.<drv-id>.<attempt>        live build-log lines: 7 days, 4 GiB and
//	                                                   100,000 lines per attempt, oldest dropped first
//
// Every stream has a byte budget, which JetStream reserves on the server:
// live log lines can fill only their own, never the space events need
// (StreamOptions.Reserved is what a server must have room for).
//
// Pipelined appends (AppendMany, PublishMany) wait at most an ack timeout
// for their acknowledgements (WithAckTimeout; the connection's own
// jetstream.WithPublishAsyncTimeout applies too), so a lost ack is an
// error (ErrAckTimeout), never a hang. Transient says which errors are
// worth retrying: a disconnect, a timeout, a leader moving, a full store.
//
// Subject tokens are ids (hashes), never user data: store paths, repository
// names and attribute paths have dots and wildcards and live in payloads.
// Payloads are protojson with proto field names (written and read by
// libs/pbjson), and every message carries
// an Ekaci-Event-Type header, so `nats sub` and `nats stream view` print
// something a person can read.
//
// Append de-duplicates on the event's id (Nats-Msg-Id, derived from the
// fact's cause) and guards an aggregate with the sequence of its last event
// (Nats-Expected-Last-Subject-Sequence over ekaci.evt.<aggregate>.<id>.*):
// a stale writer gets ErrConflict and must re-read and re-decide, on one
// node as on a replicated stream (the conformance suite runs both).
package eventlog
