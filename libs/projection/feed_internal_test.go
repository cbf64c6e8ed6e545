package projection

import (
	"slices"
	"testing"
)

func TestMatches(t *testing.T) {
	for _, tt := range []struct {
		filter, subject string
		want            bool
	}{
		{"ekaci.evt.drv.>", "ekaci.evt.drv.a.discovered", true},
		{"ekaci.evt.drv.>", "ekaci.evt.drv", false},
		{"ekaci.evt.drv.>", "ekaci.evt.change.a.requested", false},
		{"ekaci.evt.drv.*.buildable", "ekaci.evt.drv.a.buildable", true},
		{"ekaci.evt.drv.*.buildable", "ekaci.evt.drv.a.discovered", false},
		{"ekaci.evt.drv.*.buildable", "ekaci.evt.drv.a.buildable.x", false},
		{"ekaci.evt.drv.*", "ekaci.evt.drv.a.buildable", false},
		{"a.b", "a.b", true},
		{"a.b", "a.bc", false},
		{"a.*", "a", false},
	} {
		if got := matches(tt.filter, tt.subject); got != tt.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tt.filter, tt.subject, got, tt.want)
		}
	}
}

func TestOverlapping(t *testing.T) {
	for _, tt := range []struct {
		filters []string
		want    bool
	}{
		{[]string{"ekaci.evt.change.>", "ekaci.evt.drv.>", "ekaci.evt.jobset.>"}, false},
		{[]string{"ekaci.evt.drv.>", "ekaci.evt.drv.*.buildable"}, true},
		{[]string{"ekaci.evt.drv.*.buildable", "ekaci.evt.drv.*.discovered"}, false},
		{[]string{"a.*.c", "a.b.*"}, true},
		{[]string{"a.b", "a.b.c"}, false},
	} {
		if got := overlapping(tt.filters); got != tt.want {
			t.Errorf("overlapping(%v) = %v, want %v", tt.filters, got, tt.want)
		}
	}
}

func TestConsumerFilters(t *testing.T) {
	for _, tt := range []struct {
		filters []string
		want    []string
	}{
		// ingress and the recorder in the all-in-one: whole aggregates.
		{[]string{"ekaci.evt.change.>", "ekaci.evt.drv.>", "ekaci.evt.jobset.>"}, nil},
		{[]string{"ekaci.evt.drv.>"}, nil},
		{[]string{"ekaci.evt.drv.>", "ekaci.evt.drv.*.buildable"}, nil}, // overlapping
		{[]string{"ekaci.evt.drv.*.buildable"}, []string{"ekaci.evt.drv.*.buildable"}},
		{[]string{"ekaci.evt.drv.>", "ekaci.evt.jobset.*.created"}, []string{"ekaci.evt.drv.>", "ekaci.evt.jobset.*.created"}},
		{[]string{"ekaci.evt.drv.a.>"}, []string{"ekaci.evt.drv.a.>"}},
		{[]string{"ekaci.evt.>"}, nil},
	} {
		if got := consumerFilters(tt.filters); !slices.Equal(got, tt.want) {
			t.Errorf("consumerFilters(%v) = %v, want %v", tt.filters, got, tt.want)
		}
	}
}
