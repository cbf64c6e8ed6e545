package buildstate

import (
	"errors"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// TestInfrastructureRetryKeepsTheRetry: a failed_retry for an
// infrastructure interruption is taken whether or not the retry is used,
// and does not use it; any other failed_retry still needs it and uses it.
func TestInfrastructureRetryKeepsTheRetry(t *testing.T) {
	retry := func(kind eventsv1.InterruptKind) *eventsv1.Event {
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{Attempt: 2, Interruption: kind}}}
	}
	infra := eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE
	tests := []struct {
		name      string
		retryUsed bool
		kind      eventsv1.InterruptKind
		wantErr   error
		wantUsed  bool
	}{
		{"infrastructure, retry unused", false, infra, nil, false},
		{"infrastructure, retry used", true, infra, nil, true},
		{"failure, retry unused", false, eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED, nil, true},
		{"failure, retry used", true, eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED, ErrRetryUsed, true},
		{"process death, retry unused", false, eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH, nil, false},
		{"process death, retry used", true, eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH, nil, true},
		{"timeout, retry used", true, eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, ErrRetryUsed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := Drv{State: Building, Attempt: 2, RetryUsed: tt.retryUsed}
			next, err := Next(cur, retry(tt.kind))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Next = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if next.State != FailedRetry || next.RetryUsed != tt.wantUsed || next.Interruption != tt.kind {
				t.Fatalf("Next = %+v, want failed-retry with RetryUsed %v", next, tt.wantUsed)
			}
		})
	}
}
