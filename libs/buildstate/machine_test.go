package buildstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// sample builds a fact of the given kind whose payload details fit cur, so
// that the exhaustive test below judges only the (state, kind) pair.
func sample(kind Kind, cur Drv) *eventsv1.Event {
	switch kind {
	case KindDiscovered:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/x.drv"}}}
	case KindBuildable:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: cur.Attempt + 1}}}
	case KindBuildStarted:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: cur.Attempt}}}
	case KindBuildSucceeded:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: cur.Attempt, Cached: cur.State != Building}}}
	case KindBuildFailedRetry:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailedRetry{DrvBuildFailedRetry: &eventsv1.DrvBuildFailedRetry{Attempt: cur.Attempt}}}
	case KindBuildFailed:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: cur.Attempt}}}
	case KindDependencyFailed:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{CauseDrvId: "dep"}}}
	case KindBlocked:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvBlocked{DrvBlocked: &eventsv1.DrvBlocked{CauseDrvId: "dep"}}}
	case KindInterrupted:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvInterrupted{DrvInterrupted: &eventsv1.DrvInterrupted{Kind: eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT}}}
	case KindRequeued:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "retry"}}}
	case KindDownstreamFailed:
		return &eventsv1.Event{Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: &eventsv1.DrvDownstreamFailed{DrvIds: []string{"down"}}}}
	}
	panic("unknown kind " + kind)
}

// reach returns a Drv in state s through a legal history.
func reach(t *testing.T, s State) Drv {
	t.Helper()
	paths := map[State][]Kind{
		None:              {},
		Queued:            {KindDiscovered},
		Buildable:         {KindDiscovered, KindBuildable},
		Building:          {KindDiscovered, KindBuildable, KindBuildStarted},
		Succeeded:         {KindDiscovered, KindBuildable, KindBuildStarted, KindBuildSucceeded},
		Failed:            {KindDiscovered, KindBuildable, KindBuildStarted, KindBuildFailed},
		FailedRetry:       {KindDiscovered, KindBuildable, KindBuildStarted, KindBuildFailedRetry},
		TransitiveFailure: {KindDiscovered, KindDependencyFailed},
		Blocked:           {KindDiscovered, KindBlocked},
		Interrupted:       {KindDiscovered, KindInterrupted},
	}
	var d Drv
	for _, k := range paths[s] {
		var err error
		if d, err = Next(d, sample(k, d)); err != nil {
			t.Fatalf("reach %s: %s: %v", s, k, err)
		}
	}
	if d.State != s {
		t.Fatalf("reach %s: got %s", s, d.State)
	}
	return d
}

// TestNextEveryPair checks every (state, fact) pair against the diagram in
// doc.go, written out here as a table independently of the package's own.
func TestNextEveryPair(t *testing.T) {
	legal := map[State]map[Kind]State{
		None:              {KindDiscovered: Queued},
		Queued:            {KindBuildable: Buildable, KindBuildSucceeded: Succeeded, KindDependencyFailed: TransitiveFailure, KindBlocked: Blocked, KindInterrupted: Interrupted},
		Buildable:         {KindBuildStarted: Building, KindBuildSucceeded: Succeeded, KindInterrupted: Interrupted},
		Building:          {KindBuildSucceeded: Succeeded, KindBuildFailedRetry: FailedRetry, KindBuildFailed: Failed, KindInterrupted: Interrupted},
		Succeeded:         {},
		Failed:            {KindDownstreamFailed: Failed},
		FailedRetry:       {KindRequeued: Queued},
		TransitiveFailure: {KindDependencyFailed: TransitiveFailure, KindRequeued: Queued},
		Blocked:           {KindDependencyFailed: TransitiveFailure, KindRequeued: Queued},
		Interrupted:       {KindRequeued: Queued},
	}
	for _, s := range AllStates {
		for _, k := range AllKinds {
			t.Run(fmt.Sprintf("%s/%s", s, k), func(t *testing.T) {
				cur := reach(t, s)
				got, err := Next(cur, sample(k, cur))
				want, ok := legal[s][k]
				switch {
				case ok && err != nil:
					t.Fatalf("Next(%s, %s) = %v, want state %s", s, k, err, want)
				case ok && got.State != want:
					t.Fatalf("Next(%s, %s) = %s, want %s", s, k, got.State, want)
				case !ok && !errors.Is(err, ErrIllegal):
					t.Fatalf("Next(%s, %s) = %s, %v; want ErrIllegal", s, k, got.State, err)
				case !ok && got != cur:
					t.Fatalf("Next(%s, %s) changed the state on refusal: %+v", s, k, got)
				}
			})
		}
	}
}

func TestNextPayloadRules(t *testing.T) {
	tests := []struct {
		name string
		at   State
		ev   func(Drv) *eventsv1.Event
	}{
		{"uncached success while queued", Queued, func(Drv) *eventsv1.Event {
			return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{}}}
		}},
		{"buildable skips an attempt", Queued, func(d Drv) *eventsv1.Event {
			return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: d.Attempt + 2}}}
		}},
		{"started attempt differs", Buildable, func(d Drv) *eventsv1.Event {
			return &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: d.Attempt + 1}}}
		}},
		{"not a drv event", Queued, func(Drv) *eventsv1.Event {
			return &eventsv1.Event{Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := reach(t, tt.at)
			if _, err := Next(cur, tt.ev(cur)); err == nil {
				t.Fatalf("Next accepted %s", tt.name)
			}
		})
	}
}

func TestSecondRetryRefused(t *testing.T) {
	d := reach(t, FailedRetry)
	for _, k := range []Kind{KindRequeued, KindBuildable, KindBuildStarted} {
		var err error
		if d, err = Next(d, sample(k, d)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	if d.Attempt != 2 {
		t.Fatalf("attempt = %d, want 2", d.Attempt)
	}
	if _, err := Next(d, sample(KindBuildFailedRetry, d)); !errors.Is(err, ErrRetryUsed) {
		t.Fatalf("second retry: err = %v, want ErrRetryUsed", err)
	}
	ev, err := DecideFailure(d, 2, 1, "boom", 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := KindOf(ev); k != KindBuildFailed {
		t.Fatalf("DecideFailure on attempt 2 = %s, want build_failed", k)
	}
}

func TestDecideFailure(t *testing.T) {
	tests := []struct {
		name         string
		retryUsed    bool
		interruption eventsv1.InterruptKind
		want         Kind
	}{
		{"first failure retries", false, 0, KindBuildFailedRetry},
		{"second failure is final", true, 0, KindBuildFailed},
		{"first timeout retries", false, eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, KindBuildFailedRetry},
		{"second timeout is interrupted", true, eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, KindInterrupted},
		{"process death retries", false, eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH, KindBuildFailedRetry},
		{"cancel never retries", false, eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED, KindInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := reach(t, Building)
			d.RetryUsed = tt.retryUsed
			ev, err := DecideFailure(d, d.Attempt, 1, "", tt.interruption, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := KindOf(ev); got != tt.want {
				t.Fatalf("DecideFailure = %s, want %s", got, tt.want)
			}
			if _, err := Next(d, ev); err != nil {
				t.Fatalf("decided fact refused by Next: %v", err)
			}
		})
	}
	if _, err := DecideFailure(reach(t, Queued), 1, 1, "", 0, 0); !errors.Is(err, ErrIllegal) {
		t.Fatalf("DecideFailure while queued: %v, want ErrIllegal", err)
	}
}

func TestDecideBuildable(t *testing.T) {
	d := reach(t, Queued)
	if _, err := DecideBuildable(d, 1, nil); !errors.Is(err, ErrDepsUnfinished) {
		t.Fatalf("DecideBuildable with 1 unfinished = %v, want ErrDepsUnfinished", err)
	}
	b, err := DecideBuildable(d, 0, &eventsv1.DrvDiscovered{System: "x86_64-linux"})
	if err != nil || b.GetAttempt() != 1 || b.GetSystem() != "x86_64-linux" {
		t.Fatalf("DecideBuildable = %v, %v", b, err)
	}
	if _, err := DecideBuildable(reach(t, Buildable), 0, nil); !errors.Is(err, ErrIllegal) {
		t.Fatalf("DecideBuildable while buildable = %v, want ErrIllegal", err)
	}
}

// TestRandomHistories drives a random DAG through a simple scheduler that
// makes derivations buildable only through DecideBuildable, with random build outcomes, and checks
// the invariants after every fact: Completed never changes, Buildable only
// when every dependency succeeded, at most one automatic retry; and that
// the fold of each history equals the live state.
func TestRandomHistories(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomRun(t, seed) })
	}
}

func randomRun(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed*7))
	n := 20 + r.IntN(60)
	deps := make([][]int, n)
	for i := 1; i < n; i++ {
		for k := r.IntN(4); k > 0; k-- {
			deps[i] = append(deps[i], r.IntN(i))
		}
	}
	dependents := make([][]int, n)
	for i, ds := range deps {
		for _, d := range ds {
			dependents[d] = append(dependents[d], i)
		}
	}
	state := make([]Drv, n)
	history := make([][]*eventsv1.Event, n)
	completedAt := make([]State, n)
	apply := func(i int, ev *eventsv1.Event) bool {
		next, err := Next(state[i], ev)
		if errors.Is(err, ErrIllegal) {
			return false // refused: never appended
		}
		if err != nil {
			t.Fatalf("drv %d: %v", i, err)
		}
		if completedAt[i] != None && next.State != completedAt[i] {
			t.Fatalf("drv %d changed after completion: %s -> %s", i, completedAt[i], next.State)
		}
		if next.State == Buildable {
			for _, d := range deps[i] {
				if state[d].State != Succeeded {
					t.Fatalf("drv %d buildable while dep %d is %s", i, d, state[d].State)
				}
			}
		}
		state[i] = next
		history[i] = append(history[i], ev)
		if next.State.Completed() {
			completedAt[i] = next.State
		}
		return true
	}
	unfinished := func(i int) int {
		c := 0
		for _, d := range deps[i] {
			if state[d].State != Succeeded {
				c++
			}
		}
		return c
	}
	for i := range n {
		apply(i, sample(KindDiscovered, state[i]))
	}
	for step := 0; step < 4000; step++ {
		i := r.IntN(n)
		d := state[i]
		switch r.IntN(10) {
		case 0, 1: // the scheduler tries to make it buildable, honestly or not
			if b, err := DecideBuildable(d, unfinished(i), &eventsv1.DrvDiscovered{}); err == nil {
				apply(i, &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: b}})
			}
		case 2, 3:
			apply(i, sample(KindBuildStarted, d))
		case 4:
			apply(i, sample(KindBuildSucceeded, d))
		case 5:
			if ev, err := DecideFailure(d, d.Attempt, 1, "", eventsv1.InterruptKind(r.IntN(5)), 0); err == nil {
				apply(i, ev)
			}
		case 6:
			if d.State == Failed || d.State == Interrupted {
				for _, j := range dependents[i] {
					if state[j].State == Queued {
						k := KindDependencyFailed
						if d.State == Interrupted {
							k = KindBlocked
						}
						apply(j, sample(k, state[j]))
					}
				}
			}
		case 7:
			apply(i, sample(KindRequeued, d))
		default:
			// Arbitrary facts: illegal ones are refused. Buildable is left
			// out: Next cannot see the graph, and DecideBuildable is the
			// only producer of that fact (the ingress stage's contract).
			if k := AllKinds[r.IntN(len(AllKinds))]; k != KindBuildable {
				apply(i, sample(k, d))
			}
		}
	}
	for i := range n {
		retries := 0
		for _, ev := range history[i] {
			// Only a failure of the derivation's own uses the one retry.
			if k, _ := KindOf(ev); k == KindBuildFailedRetry && !KeepsRetry(ev.GetDrvBuildFailedRetry().GetInterruption()) {
				retries++
			}
		}
		if retries > 1 {
			t.Fatalf("drv %d retried %d times", i, retries)
		}
		folded, err := Fold(history[i])
		if err != nil {
			t.Fatalf("fold drv %d: %v", i, err)
		}
		if folded != state[i] {
			t.Fatalf("fold drv %d = %+v, live %+v", i, folded, state[i])
		}
	}
}

// TestDownstreamFailedOnItsCause: on the failed derivation that carries it,
// a downstream_failed fact changes nothing, and only after a failure. What
// it records for the derivations it lists is eventlog's (Transitions).
func TestDownstreamFailedOnItsCause(t *testing.T) {
	ev := &eventsv1.Event{Id: "downstream-c-9", Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: &eventsv1.DrvDownstreamFailed{
		CauseDrvPath: "/nix/store/c.drv", DrvIds: []string{"a", "b"},
	}}}
	// On the cause itself the fact changes nothing, and only after a failure.
	failed := reach(t, Failed)
	if got, err := Next(failed, ev); err != nil || got.State != Failed {
		t.Fatalf("Next(failed, downstream_failed) = %s, %v", got.State, err)
	}
	if _, err := Next(reach(t, Succeeded), ev); !errors.Is(err, ErrIllegal) {
		t.Fatalf("Next(succeeded, downstream_failed) = %v, want ErrIllegal", err)
	}
}

func TestNeededAgain(t *testing.T) {
	want := map[State]bool{Interrupted: true, Blocked: true}
	for _, s := range AllStates {
		if got := s.NeededAgain(); got != want[s] {
			t.Errorf("%s.NeededAgain() = %v, want %v", s, got, want[s])
		}
		// What is needed again must be settled and may be requeued.
		if s.NeededAgain() && (!s.Settled() || !Allowed(s, KindRequeued)) {
			t.Errorf("%s is needed again but settled=%v, requeue allowed=%v", s, s.Settled(), Allowed(s, KindRequeued))
		}
	}
	// A requeue keeps the attempt count and the spent retry: the next
	// buildable is attempt 3, and its failure is final.
	d := reach(t, FailedRetry)
	for _, k := range []Kind{KindRequeued, KindBuildable, KindBuildStarted, KindInterrupted} {
		var err error
		if d, err = Next(d, sample(k, d)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	needed := &eventsv1.Event{Payload: &eventsv1.Event_DrvRequeued{DrvRequeued: &eventsv1.DrvRequeued{Reason: "needed-again", NextAttempt: d.Attempt + 1}}}
	d, err := Next(d, needed)
	if err != nil || d.State != Queued {
		t.Fatalf("needed-again after interrupted: %v, %v", d.State, err)
	}
	b, err := DecideBuildable(d, 0, &eventsv1.DrvDiscovered{})
	if err != nil || b.GetAttempt() != 3 {
		t.Fatalf("buildable after needed-again = %v, %v; want attempt 3", b, err)
	}
	if d, err = Next(d, &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: b}}); err != nil {
		t.Fatal(err)
	}
	if d, err = Next(d, sample(KindBuildStarted, d)); err != nil {
		t.Fatal(err)
	}
	ev, err := DecideFailure(d, 3, 1, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := KindOf(ev); k != KindBuildFailed {
		t.Fatalf("failure after needed-again = %s, want build_failed (the retry stays spent)", k)
	}
}
