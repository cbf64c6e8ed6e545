// Package telemetry gives every ekaci process the same logs, metrics and
// health endpoints.
//
// NewLogger builds a zerolog.Logger that writes JSON (or a console format
// for people at a terminal) with RFC 3339 millisecond UTC timestamps.
// NewMetrics owns a private prometheus.Registry holding ekaci's metrics plus
// the Go and process collectors; WatchConsumers keeps the JetStream-derived
// gauges (consumer lag, build queue depth) current. Serve exposes /metrics,
// /healthz and /readyz over HTTP and shuts down cleanly with its context.
//
// Nothing here touches global state: no default registry, no zerolog
// globals, no http.DefaultServeMux, so tests and the all-in-one binary can
// hold several of each.
package telemetry
