package outroots

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/nixtest"
)

// built realises n new derivations and returns their outputs.
func built(t *testing.T, n int) []string {
	t.Helper()
	nixtest.Require(t)
	var expr strings.Builder
	expr.WriteString("[\n")
	for i := range n {
		fmt.Fprintf(&expr, `(derivation { name = "outroots-%d"; system = builtins.currentSystem; builder = "/bin/sh"; salt = "%d"; args = [ "-c" "echo %d > $out" ]; })`+"\n", i, time.Now().UnixNano(), i)
	}
	expr.WriteString("]\n")
	f := filepath.Join(t.TempDir(), "drvs.nix")
	if err := os.WriteFile(f, []byte(expr.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(nixtest.NoSubstitutersArgs(), "--no-out-link", f)
	out, err := exec.Command("nix-build", args...).Output()
	if err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	return strings.Fields(string(out))
}

// rooted says whether Nix counts path as alive (a root leads to it).
func rooted(t *testing.T, path string) bool {
	t.Helper()
	out, err := exec.Command("nix-store", "--query", "--roots", path).Output()
	if err != nil {
		t.Fatalf("nix-store --query --roots %s: %v", path, err)
	}
	return len(strings.TrimSpace(string(out))) > 0
}

// step is one thing that happens to a builder's roots in TestGenerations.
type step struct {
	do    string // "create", "conclude", "add" (the next output), "restart" (a new Roots on the same dir, caught up), "conclude-while-down"
	id    string
	alive []int // after the step (but a creation, which roots and unroots nothing): the outputs (by add order) that must be rooted; the others must not be
}

// TestGenerations: each output is rooted until every jobset open while it
// was rooted has concluded, whether the jobset began before the root or
// after it, and whether it concludes in this life or while the next one
// reads the log; a generation nobody waits for any more is gone, with its
// entries in Nix's gcroots/auto. Both ways of rooting: links made directly,
// and by nix-store (a builder that may not write Nix's state dir).
func TestGenerations(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "one jobset", steps: []step{
			{do: "create", id: "a"},
			{do: "add", alive: []int{0}},
			{do: "conclude", id: "a", alive: nil},
		}},
		{name: "a jobset that began after the root is waited for", steps: []step{
			{do: "create", id: "a"},
			{do: "add", alive: []int{0}},
			{do: "create", id: "b"},
			{do: "conclude", id: "a", alive: []int{0}},
			{do: "add", alive: []int{0, 1}},
			{do: "conclude", id: "b", alive: nil},
		}},
		{name: "a jobset that began after the seal is not", steps: []step{
			{do: "create", id: "a"},
			{do: "create", id: "b"},
			{do: "add", alive: []int{0}},
			{do: "conclude", id: "a", alive: []int{0}},
			{do: "create", id: "c"},
			{do: "add", alive: []int{0, 1}},
			{do: "conclude", id: "b", alive: []int{1}},
			{do: "conclude", id: "c", alive: nil},
		}},
		{name: "across a restart", steps: []step{
			{do: "create", id: "a"},
			{do: "add", alive: []int{0}},
			{do: "restart", alive: []int{0}},
			{do: "create", id: "b"},
			{do: "add", alive: []int{0, 1}},
			{do: "conclude", id: "a", alive: []int{1}},
			{do: "restart", alive: []int{1}},
			{do: "conclude", id: "b", alive: nil},
		}},
		{name: "concluded while down", steps: []step{
			{do: "create", id: "a"},
			{do: "add", alive: []int{0}},
			{do: "conclude-while-down", id: "a", alive: nil},
		}},
	}
	modes := []string{"links", "nix-store"}
	all := built(t, 3*len(modes)*len(tests)) // one nix-build: three fresh outputs per row
	for m, mode := range modes {
		for i, tt := range tests {
			outs := all[3*(m*len(tests)+i):][:3]
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				testGenerations(t, mode, tt.steps, outs)
			})
		}
	}
}

func testGenerations(t *testing.T, mode string, steps []step, outs []string) {
	dir := filepath.Join(t.TempDir(), "gcroots")
	// The log as the jobsets' facts: a restart reads it again.
	var log []string
	open := func() *Roots {
		r, err := New(dir, nixtest.NoSubstituters(), zerolog.New(zerolog.NewTestWriter(t)))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case mode == "nix-store":
			r.auto = ""
		case r.auto == "":
			t.Fatalf("%s is not writable: this test runs as the store's owner (root), as make test does", autoDir())
		}
		for _, f := range log {
			id, concluded := strings.CutPrefix(f, "-")
			if concluded {
				r.Concluded(id)
			} else {
				r.Created(id)
			}
		}
		r.caughtUp()
		return r
	}
	r := open()
	added := 0
	for i, s := range steps {
		switch s.do {
		case "create":
			log = append(log, s.id)
			r.Created(s.id)
		case "conclude":
			log = append(log, "-"+s.id)
			r.Concluded(s.id)
		case "conclude-while-down":
			log = append(log, "-"+s.id)
			r = open()
		case "add":
			r.Add(context.Background(), outs[added:added+1])
			added++
		case "restart":
			r = open()
		}
		if s.do == "create" {
			continue
		}
		for k := range added {
			want := false
			for _, a := range s.alive {
				want = want || a == k
			}
			if got := rooted(t, outs[k]); got != want {
				t.Fatalf("step %d (%s %s): output %d rooted = %v, want %v", i, s.do, s.id, k, got, want)
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d generations left after every jobset concluded", len(ents))
	}
	if mode == "links" {
		ents, _ := os.ReadDir(autoDir())
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(autoDir(), e.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
				t.Fatalf("%s left in Nix's gcroots/auto, pointing to %s", e.Name(), l)
			}
		}
	}
}

// fakeLog hands Follow the jobset facts appended so far.
type fakeLog struct {
	mu   sync.Mutex
	recs []eventlog.Record
}

func (f *fakeLog) add(id, fact string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, eventlog.Record{Seq: uint64(len(f.recs) + 1), Aggregate: eventlog.Jobset, ID: id, Fact: fact})
}

func (f *fakeLog) Read(ctx context.Context, from uint64, filters []string, fn func(eventlog.Record) error) error {
	f.mu.Lock()
	recs := append([]eventlog.Record(nil), f.recs...)
	f.mu.Unlock()
	for _, r := range recs {
		if r.Seq > from {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestFollowReadsJobsetFacts: the open jobsets follow the log's creations,
// restarts (a concluded jobset open again) and conclusions, each read once,
// and Ready comes once the log was read to its end.
func TestFollowReadsJobsetFacts(t *testing.T) {
	log := &fakeLog{}
	log.add("a", "created")
	log.add("b", "created")
	log.add("a", "concluded")
	r, err := New(t.TempDir(), nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Follow(ctx, log, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready after reading the log")
	}
	openNow := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Sorted(maps.Keys(r.open))
	}
	if got := openNow(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("open %v, want [b]", got)
	}
	log.add("a", "restarted")
	log.add("b", "concluded")
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(openNow(), []string{"a"}) {
		if time.Now().After(deadline) {
			t.Fatalf("open %v, want [a] (restarted) once the log says so", openNow())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
