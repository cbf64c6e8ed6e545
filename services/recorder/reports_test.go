package recorder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// reportLog is a log with one discovered derivation, and the recorder's
// report handler over it.
type reportLog struct {
	ctx context.Context
	log *eventlog.Log
	rep *reports
	id  string
}

func newReportLog(t *testing.T) *reportLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	id := did("x")
	appendEv(t, ctx, log, id, discovered("x"))
	return &reportLog{ctx: ctx, log: log, rep: &reports{log: log, logger: zerolog.Nop()}, id: id}
}

// start makes attempt ready and started, as ingress and a builder do, and
// returns where build_started landed.
func (l *reportLog) start(t *testing.T, attempt uint32) uint64 {
	t.Helper()
	appendEv(t, l.ctx, l.log, l.id, buildable("x", attempt))
	a, err := l.log.Append(l.ctx, l.id, &eventsv1.Event{Id: fmt.Sprintf("s-x-%d", attempt), Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: attempt, Holder: "h1"}}})
	if err != nil {
		t.Fatal(err)
	}
	return a.Seq
}

func (l *reportLog) record(t *testing.T, r *workv1.BuildReport) {
	t.Helper()
	r.DrvId = l.id
	if err := l.rep.record(l.ctx, r); err != nil {
		t.Fatalf("record %v: %v", r, err)
	}
}

// facts is the derivation's history, one word per fact; interruptions and
// retries name their kind.
func (l *reportLog) facts(t *testing.T) string {
	t.Helper()
	recs, _, err := l.log.Load(l.ctx, eventlog.Drv, l.id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		f := r.Fact
		switch p := r.Event.GetPayload().(type) {
		case *eventsv1.Event_DrvInterrupted:
			f += "(" + kindWord(p.DrvInterrupted.GetKind()) + ")"
		case *eventsv1.Event_DrvBuildFailedRetry:
			if k := p.DrvBuildFailedRetry.GetInterruption(); k != eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED {
				f += "(" + kindWord(k) + ")"
			}
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}

func kindWord(k eventsv1.InterruptKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "INTERRUPT_KIND_"))
}

var (
	infra = &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED, ExitCode: -1, Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE, LogTail: "nix-build: not found"}
	// infraFailed is an infrastructure fault a builder reported as a
	// failure: it is not the derivation's either.
	infraFailed = &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_FAILED, ExitCode: 1, Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE, LogTail: "error: opening lock file: No space left on device"}
	failed      = &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_FAILED, ExitCode: 1, LogTail: "boom"}
	ok          = &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_SUCCEEDED}
	death       = &workv1.BuildReport{Outcome: workv1.BuildOutcome_BUILD_OUTCOME_INTERRUPTED, ExitCode: -1, Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH, LogTail: "stopped: the builder running this attempt stopped before reporting"}
)

// TestInfrastructureInterruptionKeepsTheRetry: an attempt ekaci's own
// machinery failed is re-queued without using up the derivation's retry,
// never becomes a build failure, and MaxInfrastructureInterruptions of
// them in a row end as an infrastructure interruption.
func TestInfrastructureInterruptionKeepsTheRetry(t *testing.T) {
	if MaxInfrastructureInterruptions != 3 {
		t.Fatalf("the rows below assume a bound of 3, not %d", MaxInfrastructureInterruptions)
	}
	retried := "build_failed_retry(infrastructure) requeued buildable build_started"
	died := "build_failed_retry(process_death) requeued buildable build_started"
	tests := []struct {
		name    string
		reports []*workv1.BuildReport // one per attempt
		want    string                // after "discovered buildable build_started"
	}{
		{"then a real failure still has its retry", []*workv1.BuildReport{infra, failed, failed},
			retried + " build_failed_retry requeued buildable build_started build_failed"},
		{"after the retry was used", []*workv1.BuildReport{failed, infra, ok},
			"build_failed_retry requeued buildable build_started " + retried + " build_succeeded"},
		{"reported as a failure", []*workv1.BuildReport{failed, infraFailed, ok},
			"build_failed_retry requeued buildable build_started " + retried + " build_succeeded"},
		{"three in a row are an interruption", []*workv1.BuildReport{infra, infra, infra},
			retried + " " + retried + " interrupted(infrastructure)"},
		{"a real failure breaks the row", []*workv1.BuildReport{infra, failed, infra, infra, infra},
			retried + " build_failed_retry requeued buildable build_started " + retried + " " + retried + " interrupted(infrastructure)"},
		// Two SIGKILLed builders on one derivation must not make it final.
		{"two deaths keep the retry", []*workv1.BuildReport{death, death, failed, ok},
			died + " " + died + " build_failed_retry requeued buildable build_started build_succeeded"},
		{"a death after the retry was used", []*workv1.BuildReport{failed, death, ok},
			"build_failed_retry requeued buildable build_started " + died + " build_succeeded"},
		{"three deaths in a row are an interruption", []*workv1.BuildReport{death, infra, death},
			died + " " + retried + " interrupted(process_death)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newReportLog(t)
			for i, r := range tt.reports {
				attempt := uint32(i + 1)
				l.start(t, attempt)
				rep := proto.Clone(r).(*workv1.BuildReport)
				rep.Attempt = attempt
				l.record(t, rep)
			}
			if got, want := l.facts(t), "discovered buildable build_started "+tt.want; got != want {
				t.Fatalf("history:\n got  %s\n want %s", got, want)
			}
		})
	}
}

// TestFirstReportOfAnAttemptWins: a real outcome and a report of its
// holder's death for the same attempt, in either order: the first one
// recorded decides, the second is dropped.
func TestFirstReportOfAnAttemptWins(t *testing.T) {
	tests := []struct {
		name          string
		first, second *workv1.BuildReport
		want          string // after "discovered buildable build_started"
	}{
		{"death, then a late success", death, ok, "build_failed_retry(process_death) requeued"},
		{"death, then a late failure", death, failed, "build_failed_retry(process_death) requeued"},
		{"success, then a death", ok, death, "build_succeeded"},
		{"failure, then a death", failed, death, "build_failed_retry requeued"},
		{"infrastructure, then a late success", infra, ok, "build_failed_retry(infrastructure) requeued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newReportLog(t)
			startedSeq := l.start(t, 1)
			for _, r := range []*workv1.BuildReport{tt.first, tt.second} {
				rep := proto.Clone(r).(*workv1.BuildReport)
				rep.Attempt = 1
				if rep.GetInterruption() != eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH {
					// The holder's own reports know where it started.
					rep.Holder, rep.StartedSeq = "h1", startedSeq
				}
				l.record(t, rep)
			}
			if got, want := l.facts(t), "discovered buildable build_started "+tt.want; got != want {
				t.Fatalf("history:\n got  %s\n want %s", got, want)
			}
		})
	}
}

// TestGiveUpInterruptsTheAttempt (review finding 8): a report the recorder
// cannot handle — here one without an outcome, refused as permanent — is
// given up on, and its attempt is recorded as interrupted
// (infrastructure) with the error, instead of staying Building forever.
func TestGiveUpInterruptsTheAttempt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	id := did("x")
	for _, ev := range []*eventsv1.Event{discovered("x"), buildable("x", 1), started("x", 1)} {
		appendEv(t, ctx, log, id, ev)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(rctx, Config{Events: log, DataDir: t.TempDir(), Logger: zerolog.Nop()}) }()
	defer func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	if _, err := eventlog.Publish(ctx, log.JetStream(), eventlog.ReportSubject(id), "report-x-1", &workv1.BuildReport{DrvId: id, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	in := waitFact(t, ctx, log, eventlog.Drv, id, "interrupted").GetDrvInterrupted()
	if in.GetKind() != eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE || in.GetAttempt() != 1 || !strings.Contains(in.GetDetail(), "has no outcome") {
		t.Fatalf("interrupted %v attempt %d: %q", in.GetKind(), in.GetAttempt(), in.GetDetail())
	}
}

// TestAbandonLeavesASettledAttemptAlone: giving up on a report of an
// attempt that is over appends nothing; on one whose retry was recorded
// but not its re-queue, it finishes the re-queue.
func TestAbandonLeavesASettledAttemptAlone(t *testing.T) {
	tests := []struct {
		name  string
		after *eventsv1.Event // the attempt's last fact before giving up
		want  string
	}{
		{"succeeded", succeeded("x", 1), "discovered buildable build_started build_succeeded"},
		{"retry without its re-queue", &eventsv1.Event{Id: "f", Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{Attempt: 1}}},
			"discovered buildable build_started build_failed_retry requeued"},
		{"building", nil, "discovered buildable build_started interrupted(infrastructure)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newReportLog(t)
			l.start(t, 1)
			if tt.after != nil {
				appendEv(t, l.ctx, l.log, l.id, tt.after)
			}
			if err := l.rep.abandon(l.ctx, &workv1.BuildReport{DrvId: l.id, Attempt: 1}, errors.New("boom")); err != nil {
				t.Fatal(err)
			}
			if got := l.facts(t); got != tt.want {
				t.Fatalf("history:\n got  %s\n want %s", got, tt.want)
			}
		})
	}
}

func TestBoundText(t *testing.T) {
	long := strings.Repeat("é", detailBudget) // 2 bytes each
	tests := []struct {
		name, in string
	}{
		{"short", "boom"},
		{"invalid UTF-8", "a\xffb"},
		{"long, multi-byte", long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := boundText(tt.in)
			if len(got) > detailBudget || !utf8Valid(got) {
				t.Fatalf("boundText(%d bytes) = %d bytes, valid %v", len(tt.in), len(got), utf8Valid(got))
			}
			if len(tt.in) < detailBudget && utf8Valid(tt.in) && got != tt.in {
				t.Fatalf("boundText(%q) = %q", tt.in, got)
			}
		})
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }

// record decides the transition a report means and appends it, one report
// at a time: the fast path of handle, then decide.
func (r *reports) record(ctx context.Context, rep *workv1.BuildReport) error {
	if item, ok := succeededAfterStart(rep); ok {
		_, err := r.log.Append(ctx, item.ID, item.Event, eventlog.ExpectLast(item.ExpectSeq))
		if !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	return r.decide(ctx, rep)
}
