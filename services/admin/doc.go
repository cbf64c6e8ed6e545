// Package admin is the operators' stage: a gRPC API (ekaci.admin.v1.Admin)
// over a read model of its own, build logs over HTTP, and the actions of
// libs/action recorded with who asked.
//
// The read model (Model, in <data-dir>/admin.db) folds every change,
// jobset and derivation fact into rows a read answers from: changes in
// the order they were requested, jobsets with their attributes, and each
// derivation with its attempts and its complete history; and the
// approvals and drains operators recorded (with libs/action's folds, the
// ones the webhook and the builders decide by). No read replays
// the stream. An action answers with the sequence of its fact; a read
// given that sequence (after_seq) waits until the model has folded it, so
// it sees what the action did. RebuildReadModel folds the model afresh
// from the log into a file beside it and swaps it in (see host).
//
// The API listens on a unix socket (mode 0600: whoever can open it is
// trusted, no token needed) and on TCP (--admin-addr), where every call
// that acts needs the bearer token, and reads need it unless opened with
// --admin-open-reads; TCP may use TLS. Reflection and the standard health
// service are registered.
package admin
