package eventlog

import (
	"iter"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// A batched fact is one event on one derivation's subject that records a
// transition of many others: drv_downstream_failed, appended by ingress on
// a failed derivation, stands for a dependency_failed naming it on each
// derivation it lists (one fact instead of up to ~200,000 guarded ones).
// Its expansion lives here, next to the decoding, so that no reader has to
// know it: Decode and DecodeMsg refuse a batched fact, DecodeFacts returns
// it with its Transitions, and Read and the projection runner hand their
// callers each transition as a Record of its own.

// batched reports whether r is a batched fact.
func (r Record) batched() bool { return r.Event.GetDrvDownstreamFailed() != nil }

// Transitions yields the derivation facts r records, in the order a
// reader folds them: r itself, then, for a batched fact, one Record per
// derivation it lists, holding the dependency_failed that derivation takes
// (ID the listed derivation, Fact "dependency_failed", RecordedOn r.ID;
// Seq, Subject and Time those of r; the event keeps r's id, time and
// causation). The transitions of one fact share one event: read it, do
// not change it.
func (r Record) Transitions() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		if !yield(r) {
			return
		}
		d := r.Event.GetDrvDownstreamFailed()
		if d == nil {
			return
		}
		each := &eventsv1.Event{Id: r.Event.GetId(), OccurredAt: r.Event.GetOccurredAt(), CausationId: r.Event.GetCausationId(),
			Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{
				CauseDrvId: r.ID, CauseDrvPath: d.GetCauseDrvPath(),
			}}}
		for _, id := range d.GetDrvIds() {
			t := Record{Seq: r.Seq, Subject: r.Subject, Aggregate: Drv, ID: id, Fact: factDependencyFailed,
				Time: r.Time, Event: each, RecordedOn: r.ID}
			if !yield(t) {
				return
			}
		}
	}
}

// factDependencyFailed is the subject token of drv_dependency_failed.
const factDependencyFailed = "dependency_failed"
