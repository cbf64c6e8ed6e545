// Package chaos makes the graphs of ekaci's crash test and judges its
// outcome: a generated derivation graph (libs/graphgen) in which some
// derivations fail for good and some fail once (a marker file outside the
// store remembers that they did), written as a repository ekaci can build,
// and the final state every derivation must reach, computed from the
// graph alone.
//
// Crashes are allowed to change a final state only in the ways ekaci's
// policy says and only where the event log shows that a crash interrupted
// that derivation: a derivation whose history records no interruption
// must end exactly as the graph says, and one that was interrupted must
// end as its own recorded attempts decide (each attempt's outcome being
// what its kind allows), never as a verdict nobody made.
package chaos

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/graphgen"
)

// Kind is how a derivation behaves.
type Kind int

const (
	OK       Kind = iota
	Fail          // fails every time
	FailOnce      // fails the first time it runs, succeeds after
)

func (k Kind) String() string { return [...]string{"ok", "fail", "flaky"}[k] }

// Graph is a crash test's graph.
type Graph struct {
	G     *graphgen.Graph
	Kinds []Kind
	Salt  string
	// Markers is a directory outside the store, writable by Nix's build
	// users, where fail-once derivations leave their marker.
	Markers string

	survivor string
}

// New draws a graph of n derivations. Failures are drawn in the upper
// half of the layers, so that they do not fail most of the graph.
func New(n int, seed uint64, salt, markers string) *Graph {
	g := graphgen.Generate(graphgen.Params{N: n, Roots: max(4, n/20), Layers: 8, MinInputs: 1, MaxInputs: 4,
		Seed: seed, Systems: []string{"x"}, Shares: []float64{1}})
	r := rand.New(rand.NewPCG(seed, 0xc4a05))
	kinds := make([]Kind, len(g.Nodes))
	for i, nd := range g.Nodes {
		if nd.FOD {
			continue
		}
		x := r.Float64()
		switch {
		case nd.Layer >= 4 && x < 0.04:
			kinds[i] = Fail
		case x < 0.12:
			kinds[i] = FailOnce
		}
	}
	return &Graph{G: g, Kinds: kinds, Salt: salt, Markers: markers}
}

// Attr is node i's attribute.
func Attr(i int) string { return graphgen.Attr(i) }

// Nix is the graph as a Nix file: every derivation sleeps a little (so
// that a crash lands in the middle of builds), then behaves as its kind.
func (g *Graph) Nix() string {
	var b strings.Builder
	fmt.Fprintf(&b, "let\n  salt = %q;\n  markers = %q;\n  sys = builtins.currentSystem;\n", g.Salt, g.Markers)
	b.WriteString(`  script = ''
    if [ "$kind" = flaky ] && [ ! -e "$markers/$name" ]; then
      touch "$markers/$name"
      sleep 0.2
      echo "chaos: $name fails once"
      exit 1
    fi
    sleep 0.2
    if [ "$kind" = fail ]; then
      echo "chaos: $name fails for good"
      exit 1
    fi
    echo "$name" > $out
  '';
  mk = name: kind: inputs: derivation { inherit name kind salt markers inputs; system = sys; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" script ]; };
  fod = name: inputs: hash: derivation { inherit name salt inputs; system = sys; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
    args = [ "-c" "sleep 0.2; printf %s fod-$salt-$name > $out" ]; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = hash; };
in rec {
`)
	for i, nd := range g.G.Nodes {
		ins := make([]string, len(nd.Inputs))
		for k, in := range nd.Inputs {
			ins[k] = Attr(in)
		}
		if nd.FOD {
			sum := sha256.Sum256([]byte("fod-" + g.Salt + "-" + nd.Name))
			fmt.Fprintf(&b, "  %s = fod %q [ %s ] %q;\n", Attr(i), nd.Name, strings.Join(ins, " "), hex.EncodeToString(sum[:]))
			continue
		}
		fmt.Fprintf(&b, "  %s = mk %q %q [ %s ];\n", Attr(i), nd.Name, g.Kinds[i].String(), strings.Join(ins, " "))
	}
	b.WriteString("}\n")
	return b.String()
}

// WriteRepo writes the graph and an .ekaci/config.json building every
// attribute of it into dir (the caller commits it).
func (g *Graph) WriteRepo(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, ".ekaci"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(g.Nix()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".ekaci", "config.json"), []byte(`{"jobs": {"graph": {"file": "default.nix"}}}`), 0o644)
}

// Expected is each derivation's final state as the graph alone decides
// it, with no crash: a fail-once derivation is retried and succeeds, a
// failing one fails after its retry, and whatever depends on a failure
// fails transitively.
func (g *Graph) Expected() []buildstate.State {
	want := make([]buildstate.State, len(g.G.Nodes))
	for i, nd := range g.G.Nodes { // inputs come first
		want[i] = g.own(i)
		if s := fromInputs(nd.Inputs, want); s != buildstate.Succeeded {
			want[i] = s
		}
	}
	return want
}

func (g *Graph) own(i int) buildstate.State {
	if g.Kinds[i] == Fail {
		return buildstate.Failed
	}
	return buildstate.Succeeded
}

// fromInputs is what a derivation's inputs leave it: Succeeded when all
// succeeded (it is then built), TransitiveFailure when one failed, Blocked
// when one was interrupted or blocked (and none failed).
func fromInputs(inputs []int, final []buildstate.State) buildstate.State {
	s := buildstate.Succeeded
	for _, in := range inputs {
		switch final[in] {
		case buildstate.Failed, buildstate.TransitiveFailure:
			return buildstate.TransitiveFailure
		case buildstate.Interrupted, buildstate.Blocked:
			s = buildstate.Blocked
		}
	}
	return s
}

// Attempt is one recorded build attempt's end.
type Attempt struct {
	Number uint32
	// Outcome is "succeeded", "failed" or "interrupted".
	Outcome string
	Kind    eventsv1.InterruptKind
	// Holder is the builder life that recorded the attempt's start.
	Holder string
}

// Attempts reads the ends of the build attempts in a history.
func Attempts(history []*eventsv1.Event) []Attempt {
	var out []Attempt
	holders := map[uint32]string{}
	for _, ev := range history {
		if s := ev.GetDrvBuildStarted(); s != nil {
			holders[s.GetAttempt()] = s.GetHolder()
		}
	}
	defer func() {
		for i := range out {
			out[i].Holder = holders[out[i].Number]
		}
	}()
	for _, ev := range history {
		switch p := ev.GetPayload().(type) {
		case *eventsv1.Event_DrvBuildSucceeded:
			if p.DrvBuildSucceeded.GetAttempt() > 0 {
				out = append(out, Attempt{Number: p.DrvBuildSucceeded.GetAttempt(), Outcome: "succeeded"})
			}
		case *eventsv1.Event_DrvBuildFailedRetry:
			a := Attempt{Number: p.DrvBuildFailedRetry.GetAttempt(), Outcome: "failed", Kind: p.DrvBuildFailedRetry.GetInterruption()}
			if a.Kind != eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED {
				a.Outcome = "interrupted"
			}
			out = append(out, a)
		case *eventsv1.Event_DrvBuildFailed:
			out = append(out, Attempt{Number: p.DrvBuildFailed.GetAttempt(), Outcome: "failed"})
		case *eventsv1.Event_DrvInterrupted:
			out = append(out, Attempt{Number: p.DrvInterrupted.GetAttempt(), Outcome: "interrupted", Kind: p.DrvInterrupted.GetKind()})
		}
	}
	return out
}

// Report is the judgement of a run.
type Report struct {
	// Deaths counts the interruptions recorded for attempts of each
	// holder (builder life).
	Deaths map[string]int
	// Wrong lists every derivation whose final state or history the graph
	// and the recorded interruptions do not explain.
	Wrong []string
	// Interrupted counts the recorded interruptions (the crashes' doing).
	Interrupted int
	// Deviated counts the derivations whose final state differs from
	// Expected, each explained by interruptions recorded for it or for an
	// input.
	Deviated int
	// Hit describes each derivation with a recorded interruption.
	Hit []string
}

// Check judges the final histories (histories[i] is node i's). survivor
// is the builder life that concluded the run: an interruption is explained
// only as the death of an earlier life, one a crash killed.
func (g *Graph) Check(histories [][]*eventsv1.Event, survivor string) Report {
	rep := Report{Deaths: map[string]int{}}
	g.survivor = survivor
	expected := g.Expected()
	final := make([]buildstate.State, len(g.G.Nodes))
	for i, nd := range g.G.Nodes {
		cur, err := buildstate.Fold(histories[i])
		if err != nil {
			rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s (%s): history does not fold: %v", Attr(i), nd.Name, err))
			continue
		}
		final[i] = cur.State
		attempts := Attempts(histories[i])
		want := fromInputs(nd.Inputs, final)
		if want == buildstate.Succeeded {
			want = g.decide(i, attempts, &rep)
		} else if len(attempts) > 0 {
			rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s (%s): built although an input did not succeed: %v", Attr(i), nd.Name, attempts))
		}
		if cur.State != want {
			rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s (%s, %s): ended %v, want %v (attempts %v)", Attr(i), nd.Name, g.Kinds[i], cur.State, want, attempts))
		}
		if cur.State != expected[i] {
			rep.Deviated++
		}
	}
	return rep
}

// decide is the final state a built derivation's own recorded attempts
// give, after checking that each attempt's outcome is one its kind
// allows; with no interruption it is exactly the graph's.
func (g *Graph) decide(i int, attempts []Attempt, rep *Report) buildstate.State {
	name := fmt.Sprintf("%s (%s, %s)", Attr(i), g.G.Nodes[i].Name, g.Kinds[i])
	interrupted, failures := 0, 0
	for _, a := range attempts {
		switch a.Outcome {
		case "interrupted":
			interrupted++
			rep.Deaths[a.Holder]++
			switch {
			case a.Kind != eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH && a.Kind != eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE:
				rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s: attempt %d interrupted by %v, which no crash explains", name, a.Number, a.Kind))
			case a.Holder == "" || a.Holder == g.survivor:
				rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s: attempt %d reported dead, but its holder %q was not killed", name, a.Number, a.Holder))
			}
		case "failed":
			failures++
			if g.Kinds[i] == OK {
				rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s: attempt %d failed, but it never fails", name, a.Number))
			}
		case "succeeded":
			if g.Kinds[i] == Fail {
				rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s: attempt %d succeeded, but it always fails", name, a.Number))
			}
		}
	}
	if g.Kinds[i] == FailOnce && failures > 1 {
		rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s: failed %d times, but it fails once", name, failures))
	}
	rep.Interrupted += interrupted
	if interrupted > 0 {
		rep.Hit = append(rep.Hit, fmt.Sprintf("%s: %v", name, attempts))
	}
	if interrupted == 0 {
		return g.own(i)
	}
	// The policy: the first non-success is retried once; the second is
	// final, as a failure or an interruption.
	if len(attempts) == 0 {
		return buildstate.None
	}
	switch last := attempts[len(attempts)-1]; last.Outcome {
	case "succeeded":
		return buildstate.Succeeded
	case "failed":
		return buildstate.Failed
	}
	return buildstate.Interrupted
}
