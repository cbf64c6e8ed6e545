package evaluator

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/nixtest"
	"github.com/ekaci/ekaci/libs/telemetry"
)

var offline = nixtest.NoSubstituters()

// window is the tests' duplicate window: a fact appended again after it is
// not recognised by its id, only by the writer's guard.
const window = time.Second

// checkout writes files into a fresh directory (a stand-in for the
// gitter's worktree).
func checkout(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mk makes a derivation of its own name; nonce keeps each test's .drv
// files its own (a test deletes some from the store).
func mkLib(nonce string) string {
	return `let mk = name: derivation { name = "ev-${name}-` + nonce + `"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${name} > $out" ]; }; in `
}

func nonce() string { return fmt.Sprint(time.Now().UnixNano()) }

type harness struct {
	t   *testing.T
	ctx context.Context
	log *eventlog.Log
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	nixtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	js := eventlogtest.JetStreamWith(t, ctx, eventlog.StreamOptions{DuplicateWindow: window})
	return &harness{t: t, ctx: ctx, log: eventlog.New(js)}
}

// run starts the evaluator with cfg (its Log and Logger set here) until
// the test ends.
func (h *harness) run(cfg Config) {
	h.t.Helper()
	cfg.Events, cfg.Logger = h.log, zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.ErrorLevel)
	if cfg.NixOptions == nil {
		cfg.NixOptions = offline
	}
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Run(ctx, cfg); err != nil {
			h.t.Errorf("evaluator: %v", err)
		}
	}()
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

// created appends the jobset.created of job over dir and returns the
// jobset id and where it landed.
func (h *harness) created(change, job string, js *eventsv1.JobsetCreated) (string, eventlog.Appended) {
	h.t.Helper()
	id := eventlog.JobsetID(change, job)
	js.ChangeId, js.Job = change, job
	a, err := h.log.Append(h.ctx, id, &eventsv1.Event{Id: "created-" + id, CorrelationId: change, Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: js}})
	if err != nil {
		h.t.Fatal(err)
	}
	return id, a
}

// facts returns the jobset's history, by fact name.
func (h *harness) facts(id string) (map[string][]eventlog.Record, []eventlog.Record) {
	h.t.Helper()
	recs, _, err := h.log.Load(h.ctx, eventlog.Jobset, id)
	if err != nil {
		h.t.Fatal(err)
	}
	by := map[string][]eventlog.Record{}
	for _, r := range recs {
		by[r.Fact] = append(by[r.Fact], r)
	}
	return by, recs
}

// concluded waits for the jobset's evaluated or eval_failed and returns
// its history.
func (h *harness) concluded(id string, within time.Duration) map[string][]eventlog.Record {
	h.t.Helper()
	var by map[string][]eventlog.Record
	natstest.Eventually(h.t, within, func() bool {
		by, _ = h.facts(id)
		return len(by["evaluated"])+len(by["eval_failed"]) > 0
	}, "jobset "+id+" evaluated or failed")
	return by
}

// idle waits until the evaluator has handled and acknowledged every
// jobset.created up to seq.
func (h *harness) idle(seq uint64) {
	h.t.Helper()
	natstest.Eventually(h.t, time.Minute, func() bool {
		c, err := h.log.JetStream().Consumer(h.ctx, eventlog.EventsStream, "evaluator")
		if err != nil {
			return false
		}
		info, err := c.Info(h.ctx)
		return err == nil && info.Delivered.Stream >= seq && info.NumAckPending == 0 && info.NumPending == 0
	}, "the evaluator handled everything")
}

// pastWindow waits out the duplicate window: the point of these tests is
// that time has passed, so this is a wait for time, not for an event.
func pastWindow() { time.Sleep(window + 500*time.Millisecond) }

// Review finding 1, the evaluator's part: a jobset.created delivered again
// after the duplicate window (a crash before the ack and a restart later,
// or a waiting message redelivered behind a long evaluation) appended a
// second set of parts and a second jobset.evaluated, which the recorder
// folds again. The same for a replay of the evaluator's own facts.
func TestReplayAfterDuplicateWindowDecidesNothingTwice(t *testing.T) {
	n := nonce()
	lib := mkLib(n)
	for _, tc := range []struct {
		name     string
		file     string
		terminal string
		parts    int
	}{
		{"evaluated in parts", lib + `{ a = mk "a"; b = mk "b"; c = mk "c"; d = mk "d"; }`, "evaluated", 3},
		{"eval failed", `{ a = ; }`, "eval_failed", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// A budget of one attribute per fact: four attributes make
			// three parts and the evaluated fact.
			h.run(Config{partBudget: 1})
			dir := checkout(t, map[string]string{"release.nix": tc.file})
			js := &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir}
			id, _ := h.created("change-"+n, "job", js)
			by := h.concluded(id, time.Minute)
			if len(by[tc.terminal]) != 1 || len(by["attrs_listed"]) != tc.parts {
				t.Fatalf("first evaluation: %d %s, %d parts; want 1 and %d", len(by[tc.terminal]), tc.terminal, len(by["attrs_listed"]), tc.parts)
			}
			_, first := h.facts(id)

			pastWindow()
			// The same jobset.created again: past the window it is a new
			// message, delivered to the evaluator.
			_, again := h.created("change-"+n, "job", js)
			if again.Duplicate {
				t.Fatal("the replayed jobset.created was a duplicate: the window did not pass")
			}
			h.idle(again.Seq)
			// And each of the evaluator's own facts, as a writer replaying.
			rec := first[0]
			var parts []*eventsv1.Event
			for _, r := range first[1:] {
				switch r.Fact {
				case "attrs_listed":
					parts = append(parts, r.Event)
				case tc.terminal:
					if err := record(h.ctx, Config{Events: h.log}, rec, js, parts, r.Event); err != nil {
						t.Fatalf("replaying the facts: %v", err)
					}
				}
			}

			by, all := h.facts(id)
			if len(by[tc.terminal]) != 1 || len(by["evaluated"])+len(by["eval_failed"]) != 1 {
				t.Errorf("%d evaluated and %d eval_failed after the replays, want one %s", len(by["evaluated"]), len(by["eval_failed"]), tc.terminal)
			}
			seen := map[uint32]int{}
			for _, r := range by["attrs_listed"] {
				seen[r.Event.GetJobsetAttrsListed().GetPart()]++
			}
			for p := range uint32(tc.parts) {
				if seen[p] != 1 {
					t.Errorf("part %d appears %d times", p, seen[p])
				}
			}
			if len(all) != len(first)+1 { // + the replayed created
				t.Errorf("the jobset has %d facts after the replays, want %d", len(all), len(first)+1)
			}
		})
	}
}

// Review finding 7: a non-ASCII throw longer than 2000 bytes was cut in the
// middle of a rune; the fact could not be encoded, was retried, dropped,
// and the change never concluded. Many failing attributes made one
// eval_failed message without bound.
func TestEvaluationErrorsAreValidAndBounded(t *testing.T) {
	n := nonce()
	long := strings.Repeat("é", 1500) // 3000 bytes
	var attrs strings.Builder
	for i := range 40 {
		fmt.Fprintf(&attrs, "  bad%02d = throw \"%s %d\";\n", i, long, i)
	}
	file := mkLib(n) + "{\n  good = mk \"good\";\n" + attrs.String() + "}"
	for _, tc := range []struct {
		name     string
		allow    bool
		terminal string
	}{
		{"the job fails", false, "eval_failed"},
		{"failures allowed", true, "evaluated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.run(Config{})
			dir := checkout(t, map[string]string{"release.nix": file})
			id, _ := h.created("change-"+n, "job", &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir, AllowEvalFailures: tc.allow})
			by := h.concluded(id, 2*time.Minute)
			if len(by[tc.terminal]) != 1 {
				t.Fatalf("facts %v, want one %s", keys(by), tc.terminal)
			}
			ev := by[tc.terminal][0].Event
			var texts []string
			if f := ev.GetJobsetEvalFailed(); f != nil {
				texts = append(texts, f.GetError())
				if len(f.GetError()) > maxFailure {
					t.Errorf("eval_failed message of %d bytes, over %d", len(f.GetError()), maxFailure)
				}
				if !strings.Contains(f.GetError(), "bad00: error: "+long[:100]) || !strings.Contains(f.GetError(), "more") {
					t.Errorf("eval_failed message lacks the first error or the count of those left out:\n%.400s", f.GetError())
				}
			}
			for _, a := range ev.GetJobsetEvaluated().GetAttrs() {
				texts = append(texts, a.GetEvalError())
				if strings.HasPrefix(a.GetAttr(), "bad") && (len(a.GetEvalError()) > maxAttrError || !strings.Contains(a.GetEvalError(), long[:100])) {
					t.Errorf("%s: eval_error of %d bytes: %.100s", a.GetAttr(), len(a.GetEvalError()), a.GetEvalError())
				}
			}
			for _, s := range texts {
				if !utf8.ValidString(s) {
					t.Errorf("not valid UTF-8: ...%q", s[max(len(s)-20, 0):])
				}
			}
		})
	}
}

func keys(m map[string][]eventlog.Record) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s×%d", k, len(v)))
	}
	return out
}

// Review finding 8: a jobset.created the worker gave up on (every delivery
// failed) was terminated with no fact, and its change waited forever. Here
// every delivery fails reading the store's validity (a nix-store that
// always fails); after the last one the jobset is eval_failed, once, and
// counted.
func TestGiveUpRecordsEvalFailed(t *testing.T) {
	h := newHarness(t)
	n := nonce()
	bin := t.TempDir()
	instantiate, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(instantiate, filepath.Join(bin, "nix-instantiate")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "nix-store"), []byte("#!/bin/sh\necho 'store unreachable' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	m := telemetry.NewMetrics()
	h.run(Config{Metrics: m})
	dir := checkout(t, map[string]string{"release.nix": mkLib(n) + `{ a = mk "a"; }`})
	id, _ := h.created("change-"+n, "job", &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir})
	// Five deliveries 0.2, 0.4, 0.8 and 1.6 s apart, each evaluating.
	by := h.concluded(id, 2*time.Minute)
	if len(by["eval_failed"]) != 1 || len(by["evaluated"]) != 0 {
		t.Fatalf("facts %v, want one eval_failed", keys(by))
	}
	if msg := by["eval_failed"][0].Event.GetJobsetEvalFailed().GetError(); !strings.Contains(msg, "store unreachable") {
		t.Errorf("eval_failed says %q, want the cause", msg)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return gaveUp(t, m, "evaluator", "true") == 1 }, "one give-up counted as recorded")
}

// gaveUp reads ekaci_messages_given_up_total{consumer,recorded}.
func gaveUp(t *testing.T, m *telemetry.Metrics, consumer, recorded string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "ekaci_messages_given_up_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["consumer"] == consumer && labels["recorded"] == recorded {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Review finding 13: evaluation of untrusted Nix had no bound; a job that
// allocates or loops without end held an evaluator slot (and, in the
// all-in-one, the whole process's memory). Over a limit the job fails,
// saying which.
func TestEvaluationLimits(t *testing.T) {
	n := nonce()
	lib := mkLib(n)
	for _, tc := range []struct {
		name string
		cfg  Config
		file string
		want string
	}{
		{"memory", Config{EvalMemoryLimit: 1 << 30}, lib + `{ a = mk "a"; big = builtins.genList (x: x) 100000000; }`,
			"evaluation exceeded its memory limit of 1 GiB"},
		{"time", Config{EvalTimeout: 3 * time.Second}, lib + `{ a = mk "a"; loop = builtins.foldl' (a: i: builtins.foldl' (b: j: b + j) a (builtins.genList (x: x) 10000)) 0 (builtins.genList (x: x) 1000000); }`,
			"evaluation exceeded its time limit of 3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.run(tc.cfg)
			dir := checkout(t, map[string]string{"release.nix": tc.file})
			id, _ := h.created("change-"+n, "job", &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir})
			by := h.concluded(id, time.Minute)
			if len(by["eval_failed"]) != 1 {
				t.Fatalf("facts %v, want eval_failed", keys(by))
			}
			if got := by["eval_failed"][0].Event.GetJobsetEvalFailed().GetError(); got != tc.want {
				t.Errorf("eval_failed says %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{8 << 30: "8 GiB", 1 << 30: "1 GiB", 512 << 20: "512 MiB", 1536 << 20: "1536 MiB", 1000: "1000 bytes"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// Review finding 14: evaluated .drv files were no GC roots, so a Nix GC
// before the build deleted them and the build failed for good. Rooted, the
// store refuses to delete them, until the change's directory is removed.
func TestEvaluatedDrvsAreGCRoots(t *testing.T) {
	h := newHarness(t)
	n := nonce()
	roots := filepath.Join(t.TempDir(), "gcroots")
	h.run(Config{GCRootsDir: roots})
	dir := checkout(t, map[string]string{"release.nix": mkLib(n) + `{ a = mk "a"; b = mk "b"; }`})
	change := "change-" + n
	id, _ := h.created(change, "job", &eventsv1.JobsetCreated{File: "release.nix", HeadWorktree: dir})
	by := h.concluded(id, time.Minute)
	if len(by["evaluated"]) != 1 {
		t.Fatalf("facts %v, want evaluated", keys(by))
	}
	attrs := by["evaluated"][0].Event.GetJobsetEvaluated().GetAttrs()
	if len(attrs) != 2 {
		t.Fatalf("attrs %v", attrs)
	}
	for _, a := range attrs {
		out, err := exec.Command("nix-store", "--delete", a.GetDrvPath()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "still alive") {
			t.Errorf("%s: nix-store --delete = %v: %s; want it refused (rooted)", a.GetAttr(), err, out)
		}
	}
	// The layout the gitter removes on change.concluded.
	jobsetDir := filepath.Join(roots, change, id)
	for _, name := range []string{"drv", "drv-2"} {
		if _, err := os.Readlink(filepath.Join(jobsetDir, name)); err != nil {
			t.Errorf("root %s: %v", name, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(roots, change)); err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		if out, err := exec.Command("nix-store", "--delete", a.GetDrvPath()).CombinedOutput(); err != nil {
			t.Errorf("%s: still alive after its roots were removed: %v: %s", a.GetAttr(), err, out)
		}
	}
}

// An earlier attempt that stopped after some parts (a crash, a lost ack)
// is resumed: the parts already there are not appended again. Parts that
// differ from a new evaluation's fail the jobset rather than mix two
// evaluations' attributes. Two attempts racing record one set.
func TestRecordResumesAndRaces(t *testing.T) {
	attr := func(name string) []*eventsv1.JobAttr { return []*eventsv1.JobAttr{{Attr: name}} }
	part := func(id string, i uint32, name string) *eventsv1.Event {
		return &eventsv1.Event{Id: fmt.Sprintf("attrs-%s-%d", id, i), Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{Part: i, Attrs: attr(name)}}}
	}
	evaluated := func(id string) *eventsv1.Event {
		return &eventsv1.Event{Id: "evaluated-" + id, Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{AttrParts: 2, AttrCount: 3, Attrs: attr("c")}}}
	}
	for _, tc := range []struct {
		name     string
		landed   string // the attribute of the part 0 already recorded; "" none
		racers   int
		terminal string
	}{
		{"resumes after part 0", "a", 1, "evaluated"},
		{"part 0 differs", "other", 1, "eval_failed"},
		{"two racing", "", 2, "evaluated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			id, _ := h.created("change", "job-"+strings.ReplaceAll(tc.name, " ", "-"), &eventsv1.JobsetCreated{File: "x.nix"})
			_, recs := h.facts(id)
			rec, js := recs[0], recs[0].Event.GetJobsetCreated()
			cfg := Config{Events: h.log, Logger: zerolog.Nop()}
			if tc.landed != "" {
				if err := record(h.ctx, cfg, rec, js, nil, part(id, 0, tc.landed)); err != nil {
					t.Fatal(err)
				}
				pastWindow() // the resumed attempt's ids are not recognised
			}
			var wg sync.WaitGroup
			for range tc.racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := record(h.ctx, cfg, rec, js, []*eventsv1.Event{part(id, 0, "a"), part(id, 1, "b")}, evaluated(id)); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			by, _ := h.facts(id)
			if len(by[tc.terminal]) != 1 || len(by["evaluated"])+len(by["eval_failed"]) != 1 {
				t.Fatalf("facts %v, want one %s", keys(by), tc.terminal)
			}
			seen := map[uint32]int{}
			for _, r := range by["attrs_listed"] {
				seen[r.Event.GetJobsetAttrsListed().GetPart()]++
			}
			for p, n := range seen {
				if n != 1 {
					t.Errorf("part %d recorded %d times", p, n)
				}
			}
			if tc.terminal == "evaluated" && len(seen) != 2 {
				t.Errorf("parts %v, want 0 and 1", seen)
			}
		})
	}
}
