package pbjson_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/pbjson"
)

// A buildable event as ingress appends one per derivation.
func buildable() *eventsv1.Event {
	return &eventsv1.Event{Id: "buildable-3f2a9c0d1e-1", OccurredAt: timestamppb.Now(),
		Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{
			DrvPath: "/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-hello-2.12.1.drv", System: "x86_64-linux", Attempt: 1,
		}}}
}

func BenchmarkMarshal(b *testing.B) {
	ev := buildable()
	b.Run("pbjson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pbjson.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := protoMarshal.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	data, err := protoMarshal.Marshal(buildable())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fn   func([]byte, proto.Message) error
	}{{"pbjson", pbjson.Unmarshal}, {"protojson", protoUnmarshal.Unmarshal}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.fn(data, &eventsv1.Event{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
