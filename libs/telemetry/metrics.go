package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are ekaci's Prometheus metrics, registered on a registry of their
// own. Names carry the ekaci_ prefix and base units (seconds, messages).
// Stages update the exported vectors directly; WatchConsumers keeps
// ConsumerLag and BuildQueueDepth current from JetStream.
type Metrics struct {
	registry *prometheus.Registry

	// EventsAppended counts events appended to the event log, by aggregate
	// (e.g. "drv") and fact type.
	EventsAppended *prometheus.CounterVec // ekaci_events_appended_total{aggregate,type}
	// BuildQueueDepth is the number of builds waiting in EKACI_WORK for a
	// builder, by Nix system and build class. Set by WatchConsumers.
	BuildQueueDepth *prometheus.GaugeVec // ekaci_build_queue_depth{system,class}
	// BuildsActive is the number of builds running now, by system and
	// builder name.
	BuildsActive *prometheus.GaugeVec // ekaci_builds_active{system,builder}
	// ConsumerLag is each JetStream consumer's num_pending: messages on
	// its filter not yet delivered to it. Set by WatchConsumers.
	ConsumerLag *prometheus.GaugeVec // ekaci_consumer_lag_messages{stream,consumer}
	// BuildsFinished counts finished builds by outcome.
	BuildsFinished *prometheus.CounterVec // ekaci_builds_finished_total{outcome}
	// BuildDuration is the wall-clock time of finished builds by outcome.
	BuildDuration *prometheus.HistogramVec // ekaci_build_duration_seconds{outcome}
	// ProjectionApplied is the event-log sequence each projection has
	// applied up to, to compare with the stream's last sequence.
	ProjectionApplied *prometheus.GaugeVec // ekaci_projection_applied_sequence{projection}
	// StageHandled counts messages each stage handled, by result (e.g.
	// "ok", "retry", "error").
	StageHandled *prometheus.CounterVec // ekaci_stage_handled_total{stage,result}
	// GaveUp counts messages a stage stopped handling (refused as
	// permanent or past max deliveries), by consumer and whether a
	// terminal fact was recorded for them ("true"/"false"). Anything with
	// recorded="false" is work that no change will see concluded.
	GaveUp *prometheus.CounterVec // ekaci_messages_given_up_total{consumer,recorded}
	// StreamBytes and StreamMaxBytes are each stream's stored bytes and
	// byte budget (eventlog.WatchStorage sets them): EKACI_EVENTS refuses
	// appends once the first reaches the second, so alert well before.
	StreamBytes    *prometheus.GaugeVec // ekaci_stream_bytes{stream}
	StreamMaxBytes *prometheus.GaugeVec // ekaci_stream_max_bytes{stream}
	// BuilderSteps times the builder's own machinery around Nix: each
	// nix-store --realise ("invocation"), each validity question asked of
	// the store ("validity"), each call adding GC roots ("roots"). Their
	// sums over the invocations' count are what judging by the store
	// costs per batch.
	BuilderSteps *prometheus.HistogramVec // ekaci_builder_nix_step_seconds{step}
}

// SetStreamUsage records a stream's bytes and budget (0: none); nil m
// records nothing.
func (m *Metrics) SetStreamUsage(stream string, bytes, maxBytes uint64) {
	if m == nil {
		return
	}
	m.StreamBytes.WithLabelValues(stream).Set(float64(bytes))
	m.StreamMaxBytes.WithLabelValues(stream).Set(float64(maxBytes))
}

// CountGiveUp is a worker.Config.GaveUp that counts into m.GaveUp; nil m
// counts nothing.
func (m *Metrics) CountGiveUp(consumer string, recorded bool) {
	if m == nil {
		return
	}
	r := "false"
	if recorded {
		r = "true"
	}
	m.GaveUp.WithLabelValues(consumer, r).Inc()
}

// Steps of ekaci_builder_nix_step_seconds.
const (
	BuilderStepInvocation = "invocation" // one nix-store --realise
	BuilderStepValidity   = "validity"   // one validity question asked of the store
	BuilderStepRoots      = "roots"      // one call adding GC roots
)

// BuildDurationBuckets span a cached no-op (a second) to a long build
// (four hours); Nix builds are rarely shorter and ekaci's timeouts cap them.
var BuildDurationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}

// NewMetrics creates the metrics on a fresh registry that also holds the
// Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		EventsAppended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ekaci_events_appended_total",
			Help: "Events appended to the event log, by aggregate and fact type.",
		}, []string{"aggregate", "type"}),
		BuildQueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_build_queue_depth",
			Help: "Builds waiting in EKACI_WORK for a builder, by Nix system and build class.",
		}, []string{"system", "class"}),
		BuildsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_builds_active",
			Help: "Builds running now, by Nix system and builder.",
		}, []string{"system", "builder"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_consumer_lag_messages",
			Help: "Messages matching a JetStream consumer's filter not yet delivered to it (num_pending).",
		}, []string{"stream", "consumer"}),
		BuildsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ekaci_builds_finished_total",
			Help: "Finished builds, by outcome.",
		}, []string{"outcome"}),
		BuildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ekaci_build_duration_seconds",
			Help:    "Wall-clock duration of finished builds, by outcome.",
			Buckets: BuildDurationBuckets,
		}, []string{"outcome"}),
		ProjectionApplied: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_projection_applied_sequence",
			Help: "Event-log stream sequence a projection has applied up to.",
		}, []string{"projection"}),
		StageHandled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ekaci_stage_handled_total",
			Help: "Messages handled by a stage, by result.",
		}, []string{"stage", "result"}),
		GaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ekaci_messages_given_up_total",
			Help: "Messages a stage stopped handling (permanent error or max deliveries), by consumer and whether a terminal fact was recorded.",
		}, []string{"consumer", "recorded"}),
		StreamBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_stream_bytes",
			Help: "Bytes stored in each of ekaci's JetStream streams.",
		}, []string{"stream"}),
		StreamMaxBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ekaci_stream_max_bytes",
			Help: "Byte budget of each of ekaci's JetStream streams (0: none); EKACI_EVENTS refuses appends when full.",
		}, []string{"stream"}),
		BuilderSteps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ekaci_builder_nix_step_seconds",
			Help:    "Duration of each step of the builder's machinery around Nix, by step: invocation (one nix-store --realise), validity (one store question), roots (adding GC roots).",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600, 3600},
		}, []string{"step"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.EventsAppended, m.BuildQueueDepth, m.BuildsActive, m.ConsumerLag,
		m.BuildsFinished, m.BuildDuration, m.ProjectionApplied, m.StageHandled, m.GaveUp,
		m.StreamBytes, m.StreamMaxBytes, m.BuilderSteps,
	)
	return m
}

// Registry is the registry holding every metric; /metrics serves it.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }
