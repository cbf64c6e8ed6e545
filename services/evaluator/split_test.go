package evaluator

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

func TestSplitAttrs(t *testing.T) {
	var attrs []*eventsv1.JobAttr
	for i := range 50 {
		attrs = append(attrs, &eventsv1.JobAttr{Attr: fmt.Sprintf("pkgs.p%02d", i), DrvId: fmt.Sprintf("%032d", i), DrvPath: fmt.Sprintf("/nix/store/%032d-p.drv", i)})
	}
	for _, tc := range []struct {
		name   string
		attrs  []*eventsv1.JobAttr
		budget int
		parts  int // 0: more than one
	}{
		{"none", nil, 1000, 1},
		{"all fit", attrs, 1 << 20, 1},
		{"parts", attrs, 1000, 0},
		{"budget below one attribute", attrs[:3], 10, 3},
	} {
		parts := splitAttrs(tc.attrs, tc.budget)
		if tc.parts != 0 && len(parts) != tc.parts || tc.parts == 0 && len(parts) < 2 {
			t.Fatalf("%s: %d parts", tc.name, len(parts))
		}
		var joined []*eventsv1.JobAttr
		for _, p := range parts {
			size := 0
			for _, a := range p {
				b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
				size += len(b) + 1
			}
			if size > tc.budget && len(p) > 1 {
				t.Fatalf("%s: a part of %d attributes is %d bytes, budget %d", tc.name, len(p), size, tc.budget)
			}
			joined = append(joined, p...)
		}
		if len(joined) != len(tc.attrs) {
			t.Fatalf("%s: %d attributes in the parts, want %d", tc.name, len(joined), len(tc.attrs))
		}
		for i := range joined {
			if joined[i] != tc.attrs[i] {
				t.Fatalf("%s: attribute %d out of order", tc.name, i)
			}
		}
	}
}
