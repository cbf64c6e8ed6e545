// Package eventlog appends ekaci's facts to JetStream and reads them back in
// order.
//
// Streams (provisioned idempotently by Provision):
//
//	EKACI_EVENTS  ekaci.evt.<aggregate>.<id>.<fact>   the event log: limits retention, file storage,
//	                                                   discard new, delete and purge denied, no max age
//	EKACI_WORK    ekaci.work.build.<system>.<class>   builds waiting for a builder (work queue)
//	              ekaci.work.report.<drv-id>          builders' reports, consumed by the recorder
//	EKACI_LOGS    ekaci.log.<drv-id>.<attempt>        live build-log lines, kept 7 days
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
// a stale writer gets ErrConflict and must re-read and re-decide.
package eventlog
