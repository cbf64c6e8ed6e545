package binrow

import (
	"errors"
	"testing"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

func TestRoundTripAndBadInput(t *testing.T) {
	d := buildstate.Drv{State: buildstate.TransitiveFailure, Attempt: 2, RetryUsed: true, Cached: true,
		Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, Cause: "c0ffee", Events: 7}
	b := AppendDrv(AppendString(nil, "id-1"), d)
	b = append(b, 9)
	r := NewReader(b)
	if got := r.String(); got != "id-1" {
		t.Fatalf("string %q", got)
	}
	if got := r.Drv(); got != d {
		t.Fatalf("drv %+v, want %+v", got, d)
	}
	if r.Byte() != 9 || r.Done() != nil {
		t.Fatalf("tail: %v", r.Done())
	}
	// Same input, same bytes.
	if again := append(AppendDrv(AppendString(nil, "id-1"), d), 9); string(again) != string(b) {
		t.Fatal("encoding is not deterministic")
	}
	for cut := range len(b) - 1 {
		r := NewReader(b[:cut])
		_ = r.String()
		r.Drv()
		r.Byte()
		if err := r.Done(); !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut at %d: %v, want ErrMalformed", cut, err)
		}
	}
	if err := NewReader(append(b, 1)).Done(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unread bytes: %v", err)
	}
	bad := AppendDrv(nil, d)
	bad[0] = 200 // no such state
	r = NewReader(bad)
	r.Drv()
	if !errors.Is(r.Done(), ErrMalformed) {
		t.Fatalf("state 200 accepted: %v", r.Done())
	}
}
