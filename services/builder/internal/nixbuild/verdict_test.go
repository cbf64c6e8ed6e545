package nixbuild

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	built := Observed{DrvValid: true, Started: true, Ended: true, Silence: 10 * time.Millisecond, Ran: 20 * time.Millisecond}
	with := func(o Observed, f func(*Observed)) Observed { f(&o); return o }
	batch := Invocation{Jobs: 5, Exit: 100}
	alone := Invocation{Jobs: 1, Exit: 100}
	silentBit := Invocation{Jobs: 5, Exit: 101, MaxSilent: 2 * time.Second}
	tests := []struct {
		name   string
		o      Observed
		inv    Invocation
		want   Outcome
		why    Interruption
		again  bool
		code   int
		detail string
	}{
		{name: "drv gone", o: Observed{}, inv: batch, want: Interrupted, why: Infrastructure, code: -1, detail: "not valid"},
		{name: "valid before any build", o: Observed{DrvValid: true, OutputsValid: true}, inv: batch, want: Succeeded},
		{name: "valid although Nix failed the invocation", o: with(built, func(o *Observed) { o.OutputsValid = true }),
			inv: Invocation{Jobs: 3, Exit: 1}, want: Succeeded},
		{name: "valid although cancelled", o: Observed{DrvValid: true, OutputsValid: true}, inv: Invocation{Jobs: 2, Cancelled: true}, want: Succeeded},
		{name: "built, invalid, in a batch", o: built, inv: batch, want: Failed, code: 100},
		{name: "built, invalid, alone: Nix's status", o: built, inv: Invocation{Jobs: 1, Exit: 102}, want: Failed, code: 102},
		{name: "alone, missing output (status 1)", o: built, inv: Invocation{Jobs: 1, Exit: 1}, want: Failed, code: 1},
		{name: "timeout bit, this one silent", o: with(built, func(o *Observed) { o.Silence = 2 * time.Second }),
			inv: silentBit, want: Interrupted, why: Timeout, code: 101, detail: "no output for 2s"},
		{name: "timeout bit, another one was silent", o: built, inv: silentBit, want: Failed, code: 100},
		{name: "timeout bit, this one near the limit as read (Nix's records read late)", o: with(built, func(o *Observed) { o.Silence = 1500 * time.Millisecond }),
			inv: silentBit, again: true},
		{name: "timeout bit, this one near the total limit as read", o: with(built, func(o *Observed) { o.Ran = 2 * time.Second }),
			inv: Invocation{Jobs: 4, Exit: 101, Timeout: 3 * time.Second}, again: true},
		{name: "timeout bit, alone, near the limit: Nix's status", o: with(built, func(o *Observed) { o.Silence = 1500 * time.Millisecond }),
			inv: Invocation{Jobs: 1, Exit: 101, MaxSilent: 2 * time.Second}, want: Interrupted, why: Timeout, code: 101, detail: "no output for 2s"},
		{name: "timeout bit, alone, both limits, neither reached as read", o: built,
			inv: Invocation{Jobs: 1, Exit: 101, MaxSilent: 2 * time.Second, Timeout: time.Hour}, want: Interrupted, why: Timeout, code: 101, detail: "Nix's own timeout"},
		{name: "timeout bit, total", o: with(built, func(o *Observed) { o.Ran = 3 * time.Second }),
			inv: Invocation{Jobs: 4, Exit: 101, Timeout: 3 * time.Second}, want: Interrupted, why: Timeout, code: 101, detail: "still running after 3s"},
		{name: "timeout bit, alone", o: built, inv: Invocation{Jobs: 1, Exit: 101}, want: Interrupted, why: Timeout, code: 101, detail: "Nix's own timeout"},
		{name: "silent but no timeout bit", o: with(built, func(o *Observed) { o.Silence = time.Hour }),
			inv: Invocation{Jobs: 4, Exit: 100, MaxSilent: time.Second}, want: Failed, code: 100},
		{name: "counted done but invalid, batch", o: with(built, func(o *Observed) { o.CountedDone = true }), inv: batch, again: true},
		{name: "counted done but invalid, alone", o: with(built, func(o *Observed) { o.CountedDone = true }), inv: alone,
			want: Interrupted, why: Infrastructure, code: 100, detail: "counted the build done"},
		{name: "ended before the cancel", o: with(built, func(o *Observed) { o.EndedBeforeCancel = true }),
			inv: Invocation{Jobs: 3, Exit: -1, Signal: syscall.SIGKILL, Cancelled: true}, want: Failed, code: 100},
		{name: "running at the cancel", o: Observed{DrvValid: true, Started: true},
			inv: Invocation{Jobs: 3, Cancelled: true}, want: Interrupted, why: Cancelled, code: -1},
		{name: "never reached before the cancel", o: Observed{DrvValid: true}, inv: Invocation{Jobs: 3, Cancelled: true},
			want: Interrupted, why: Cancelled, code: -1},
		{name: "not started in a batch", o: Observed{DrvValid: true}, inv: Invocation{Jobs: 3, Exit: 1}, again: true},
		{name: "Nix died mid-batch", o: Observed{DrvValid: true, Started: true}, inv: Invocation{Jobs: 3, Exit: -1, Signal: syscall.SIGKILL}, again: true},
		{name: "alone, not started", o: Observed{DrvValid: true}, inv: Invocation{Jobs: 1, Exit: 1},
			want: Interrupted, why: Infrastructure, code: 1, detail: "did not build it"},
		{name: "alone, Nix killed, OOM", o: Observed{DrvValid: true, Started: true}, inv: Invocation{Jobs: 1, Exit: -1, Signal: syscall.SIGKILL, OOM: true},
			want: Interrupted, why: OutOfMemory, code: -1},
		{name: "alone, Nix killed, no OOM", o: Observed{DrvValid: true, Started: true}, inv: Invocation{Jobs: 1, Exit: -1, Signal: syscall.SIGKILL},
			want: Interrupted, why: ProcessDeath, code: -1, detail: "killed"},
		{name: "alone, Nix hung", o: Observed{DrvValid: true, Started: true}, inv: Invocation{Jobs: 1, Exit: -1, Signal: syscall.SIGKILL, Hung: true},
			want: Interrupted, why: Infrastructure, code: -1, detail: "printed nothing"},
		{name: "alone, Nix ended mid-build, first time", o: Observed{DrvValid: true, Started: true}, inv: Invocation{Jobs: 1, Exit: 1}, again: true},
		{name: "alone, Nix ended mid-build, again", o: Observed{DrvValid: true, Started: true, Aborted: 1}, inv: Invocation{Jobs: 1, Exit: 1},
			want: Failed, code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(tt.o, tt.inv)
			if tt.again {
				if !v.Again {
					t.Fatalf("verdict %+v, want build again", v)
				}
				return
			}
			if v.Again || v.Outcome != tt.want || v.Interruption != tt.why || v.ExitCode != tt.code {
				t.Fatalf("verdict %+v, want %v/%v exit %d", v, tt.want, tt.why, tt.code)
			}
			if !strings.Contains(v.Detail, tt.detail) {
				t.Fatalf("detail %q, want it to say %q", v.Detail, tt.detail)
			}
		})
	}
}
