package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

func downstream(id, causePath string, listed ...string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, CausationId: "failed-c", OccurredAt: timestamppb.New(time.Unix(7, 0)),
		Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: &eventsv1.DrvDownstreamFailed{CauseDrvPath: causePath, DrvIds: listed}}}
}

// describe is a transition as the tests compare it.
func describe(r eventlog.Record) string {
	return fmt.Sprintf("%s %s on=%q seq=%d", r.ID, r.Fact, r.RecordedOn, r.Seq)
}

func TestTransitions(t *testing.T) {
	tests := []struct {
		name string
		rec  eventlog.Record
		want []string
	}{
		{"a fact on its own subject is itself",
			eventlog.Record{Seq: 3, Aggregate: eventlog.Drv, ID: "a", Fact: "discovered", Event: discovered("d", "/nix/store/a-x.drv")},
			[]string{`a discovered on="" seq=3`}},
		{"a batched fact is itself, then each listed derivation's dependency_failed",
			eventlog.Record{Seq: 9, Aggregate: eventlog.Drv, ID: "c", Fact: "downstream_failed", Event: downstream("down-c-8", "/nix/store/c-x.drv", "a", "b")},
			[]string{`c downstream_failed on="" seq=9`, `a dependency_failed on="c" seq=9`, `b dependency_failed on="c" seq=9`}},
		{"a batched fact listing nothing is itself",
			eventlog.Record{Seq: 9, Aggregate: eventlog.Drv, ID: "c", Fact: "downstream_failed", Event: downstream("down-c-8", "/nix/store/c-x.drv")},
			[]string{`c downstream_failed on="" seq=9`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for r := range tt.rec.Transitions() {
				got = append(got, describe(r))
				if r.RecordedOn == "" {
					continue
				}
				// The transition is the dependency_failed that would have
				// been appended on r.ID: same id, time and cause.
				want := &eventsv1.Event{Id: tt.rec.Event.GetId(), OccurredAt: tt.rec.Event.GetOccurredAt(), CausationId: tt.rec.Event.GetCausationId(),
					Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{
						CauseDrvId: tt.rec.ID, CauseDrvPath: tt.rec.Event.GetDrvDownstreamFailed().GetCauseDrvPath()}}}
				if !proto.Equal(r.Event, want) {
					t.Errorf("transition of %s = %v, want %v", r.ID, r.Event, want)
				}
				if _, fact, err := eventlog.Address(r.Event); err != nil || fact != r.Fact {
					t.Errorf("transition of %s: Fact %q, its event's fact %q (%v)", r.ID, r.Fact, fact, err)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Transitions = %q, want %q", got, tt.want)
			}
		})
	}
	// A reader that stops early stops the expansion.
	rec := eventlog.Record{ID: "c", Event: downstream("x", "/nix/store/c-x.drv", "a", "b", "d")}
	n := 0
	for range rec.Transitions() {
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("stopped after %d transitions, want 2", n)
	}
}

// testBatched: every way of reading the log gives a batched fact's
// transitions or refuses it; none gives the fact alone.
func testBatched(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	for _, id := range []string{"a", "b", "c"} {
		if _, err := l.Append(ctx, id, discovered("disc-"+id, "/nix/store/"+id+"-x.drv")); err != nil {
			t.Fatal(err)
		}
	}
	fact, err := l.Append(ctx, "c", downstream("down-c", "/nix/store/c-x.drv", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}

	var read []string
	if err := l.Read(ctx, fact.Seq-1, nil, func(r eventlog.Record) error {
		read = append(read, describe(r))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf(`c downstream_failed on="" seq=%d`, fact.Seq),
		fmt.Sprintf(`a dependency_failed on="c" seq=%d`, fact.Seq),
		fmt.Sprintf(`b dependency_failed on="c" seq=%d`, fact.Seq),
	}
	if !slices.Equal(read, want) {
		t.Errorf("Read = %q, want %q", read, want)
	}

	// Load is one aggregate's own subjects: the fact on c, nothing on a.
	for id, wantFacts := range map[string][]string{"c": {"discovered", "downstream_failed"}, "a": {"discovered"}} {
		recs, last, err := l.Load(ctx, eventlog.Drv, id)
		if err != nil {
			t.Fatal(err)
		}
		var facts []string
		for _, r := range recs {
			facts = append(facts, r.Fact)
		}
		if !slices.Equal(facts, wantFacts) || last != recs[len(recs)-1].Seq {
			t.Errorf("Load(%s) = %v (last %d), want %v", id, facts, last, wantFacts)
		}
	}

	// A consumer's message: DecodeMsg refuses it, DecodeFacts expands it.
	s, err := js.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, fact.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.Decode(raw.Subject, raw.Data, raw.Sequence, raw.Time); !errors.Is(err, eventlog.ErrBatched) {
		t.Errorf("Decode(downstream_failed) = %v, want ErrBatched", err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{fact.Subject}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.DecodeMsg(m); !errors.Is(err, eventlog.ErrBatched) {
		t.Errorf("DecodeMsg(downstream_failed) = %v, want ErrBatched", err)
	}
	rec, err := eventlog.DecodeFacts(m)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range rec.Transitions() {
		n++
	}
	if n != 3 {
		t.Errorf("DecodeFacts: %d transitions, want 3", n)
	}
}
