package nixbuild

import (
	"fmt"
	"syscall"
	"time"
)

// Observed is what the store and one Nix invocation showed about one
// derivation. Everything in it comes from the store (validity) or from
// records only Nix itself can make: the start of the build activity naming
// the derivation (type 105, which a builder's "@nix" lines cannot create),
// the build counters of Nix's "builds" activity, and the timing of the
// activity's own output. Nix's messages (free text, which any builder can
// forge) are not in it.
type Observed struct {
	// DrvValid: the .drv itself is valid in the store (a garbage
	// collection may have taken it since evaluation).
	DrvValid bool
	// OutputsValid: every output of the derivation is valid in the store
	// after the invocation (read from the store, not from the disk).
	OutputsValid bool
	// Started: Nix started the derivation's build activity.
	Started bool
	// Ended: Nix's build counters moved (done or failed) while this was
	// the one build running: Nix ended its build. (A Nix that stops
	// mid-way, killed or interrupted, moves no counter.)
	Ended bool
	// CountedDone: the counters counted its end as done, not failed.
	CountedDone bool
	// EndedBeforeCancel: its end was seen before ekaci cancelled the
	// invocation.
	EndedBeforeCancel bool
	// Silence is from its last output (or its start) to its end; Ran
	// from its start to its end.
	Silence, Ran time.Duration
	// Aborted counts the earlier invocations that built it alone and
	// ended, by themselves, in the middle of its build (see Judge).
	Aborted int
}

// Invocation is how one Nix invocation ended.
type Invocation struct {
	// Jobs is how many derivations it was given.
	Jobs int
	// Exit is its exit status (-1 when it died of a signal).
	Exit int
	// Signal is the signal it died of, 0 when it exited.
	Signal syscall.Signal
	// Cancelled: ekaci stopped it (its context ended).
	Cancelled bool
	// Hung: ekaci stopped it because it printed nothing for far longer
	// than any build may stay silent.
	Hung bool
	// OOM: the kernel's OOM killer acted while it ran (or that cannot be
	// read); used only when it died of SIGKILL.
	OOM bool
	// MaxSilent and Timeout are Nix's max-silent-time and timeout as given.
	MaxSilent, Timeout time.Duration
}

// Verdict is the judgement of one derivation after one invocation.
type Verdict struct {
	Outcome      Outcome
	Interruption Interruption
	// Again: nothing can be concluded about the derivation from this
	// invocation (it was not built, or Nix stopped mid-way): build it
	// again, alone or in a smaller batch, without using its retry.
	Again    bool
	ExitCode int
	Detail   string
}

// timeoutSlack absorbs the difference between when Nix saw a build's last
// output and end and when we read them from its log stream.
const timeoutSlack = 250 * time.Millisecond

// timing is what Nix's timeout bit and a build's own timing say.
type timing int

const (
	notTimedOut timing = iota
	timedOut
	// mayHaveTimedOut: some build of the batch timed out, and this one's
	// timing, as we read it, is near a limit without reaching it. We read
	// Nix's records late when the machine is loaded (a start read half a
	// second late makes a build look half a second shorter), so only a
	// build far from every limit surely did not time out; this one is
	// built again in a smaller batch, down to alone, where Nix's status
	// alone decides.
	mayHaveTimedOut
)

// nearLimit is the share of a limit above which a build in a batch with a
// timeout may be the one Nix stopped.
const nearLimit = 4 // a quarter

// timedOut says whether Nix's timeout bit plus this build's own timing
// says the build was stopped by Nix's max-silent-time or timeout, and
// which. The bit (in the invocation's exit status) says some build of the
// invocation timed out; the timing says whether this one did. Alone, the
// bit is enough.
func (inv Invocation) timedOut(o Observed) (timing, string) {
	bit := inv.Exit >= 0 && inv.Exit&0x60 == 0x60 && inv.Exit&0x01 != 0
	if !bit {
		return notTimedOut, ""
	}
	silent := inv.MaxSilent > 0 && o.Silence >= inv.MaxSilent-timeoutSlack
	long := inv.Timeout > 0 && o.Ran >= inv.Timeout-timeoutSlack
	switch {
	case silent:
		return timedOut, fmt.Sprintf("stopped: no output for %s (the no-output timeout)", inv.MaxSilent)
	case long:
		return timedOut, fmt.Sprintf("stopped: still running after %s (the total timeout)", inv.Timeout)
	case inv.Jobs == 1 && inv.MaxSilent > 0 && inv.Timeout == 0:
		// Alone, the bit is this build's, and only one limit was given.
		return timedOut, fmt.Sprintf("stopped: no output for %s (the no-output timeout)", inv.MaxSilent)
	case inv.Jobs == 1 && inv.Timeout > 0 && inv.MaxSilent == 0:
		return timedOut, fmt.Sprintf("stopped: still running after %s (the total timeout)", inv.Timeout)
	case inv.Jobs == 1:
		return timedOut, "stopped by Nix's own timeout (max-silent-time or timeout)"
	case inv.MaxSilent > 0 && o.Silence >= inv.MaxSilent/nearLimit, inv.Timeout > 0 && o.Ran >= inv.Timeout/nearLimit:
		return mayHaveTimedOut, ""
	}
	return notTimedOut, ""
}

// Judge decides one derivation's verdict. It is a pure function of what
// the store and Nix's own records say about that derivation, and of how
// the invocation ended; what another derivation's builder printed cannot
// reach it.
func Judge(o Observed, inv Invocation) Verdict {
	switch {
	case !o.DrvValid:
		return Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: -1,
			Detail: "stopped: the .drv is not valid in the Nix store (garbage-collected since evaluation?); not a build failure"}
	case o.OutputsValid:
		// Built now, before, or by someone else: the store says so.
		return Verdict{Outcome: Succeeded}
	case o.Started && o.Ended && !o.CountedDone && (!inv.Cancelled || o.EndedBeforeCancel):
		switch t, why := inv.timedOut(o); t {
		case timedOut:
			return Verdict{Outcome: Interrupted, Interruption: Timeout, ExitCode: 101, Detail: why}
		case mayHaveTimedOut:
			return Verdict{Again: true}
		}
		code := 100 // Nix's "a build failed"
		if inv.Jobs == 1 && inv.Exit > 0 {
			code = inv.Exit // alone, Nix's status is this build's
		}
		return Verdict{Outcome: Failed, ExitCode: code}
	case inv.Cancelled:
		return Verdict{Outcome: Interrupted, Interruption: Cancelled, ExitCode: -1, Detail: "stopped: the build was cancelled"}
	case inv.Jobs > 1:
		return Verdict{Again: true}
	}
	// Alone, and Nix did not judge it: say what stopped it.
	switch {
	case inv.Hung:
		return Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: -1,
			Detail: "stopped: Nix printed nothing for far longer than the no-output timeout; not a build failure"}
	case inv.Signal == syscall.SIGKILL && inv.OOM:
		return Verdict{Outcome: Interrupted, Interruption: OutOfMemory, ExitCode: -1,
			Detail: "killed, most likely by the out-of-memory killer"}
	case inv.Signal != 0:
		return Verdict{Outcome: Interrupted, Interruption: ProcessDeath, ExitCode: -1,
			Detail: fmt.Sprintf("stopped: Nix died of %v", inv.Signal)}
	case o.Started && !o.Ended && inv.Exit > 0 && o.Aborted == 0:
		// Nix ended by itself in the middle of this build, moving no
		// counter: either something stopped Nix (a SIGTERM from outside,
		// which it turns into exit status 1) or finishing this build threw
		// an error Nix does not count as a build failure (2.8 aborts the
		// whole invocation on an output cycle). Only a second time tells.
		return Verdict{Again: true}
	case o.Started && !o.Ended && inv.Exit > 0:
		// The same, twice in a row, alone: the derivation's own doing.
		return Verdict{Outcome: Failed, ExitCode: inv.Exit}
	case o.Started && !o.Ended:
		return Verdict{Outcome: Interrupted, Interruption: ProcessDeath, ExitCode: inv.Exit,
			Detail: fmt.Sprintf("stopped: Nix ended (exit status %d) before it finished the build", inv.Exit)}
	case o.Started && o.CountedDone:
		return Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: inv.Exit,
			Detail: "stopped: Nix counted the build done but its outputs are not valid in the store; not a build failure"}
	}
	return Verdict{Outcome: Interrupted, Interruption: Infrastructure, ExitCode: inv.Exit,
		Detail: fmt.Sprintf("stopped: Nix did not build it (exit status %d); not a build failure", inv.Exit)}
}
