package benchmesh

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/services/ekaci/internal/bench"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// process's waiter, a connection or a counter's consumer left behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// build builds nats-server from the pinned module and every stage binary
// into a directory of the test's.
func build(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pkgs := []string{"github.com/nats-io/nats-server/v2"}
	for _, st := range Stages {
		pkgs = append(pkgs, fmt.Sprintf("github.com/ekaci/ekaci/services/%s/cmd/ekaci-%s", st, st))
	}
	if out, err := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return dir
}

// TestScheduleThroughTheMesh runs a 500-derivation schedule through the
// cluster of deploy/nats with every stage a process of its own, and checks
// the outcome, not its speed: every derivation of the graph ends
// Succeeded on its first attempt with exactly one fact of each kind the
// schedule implies (discovered, buildable, build_started,
// build_succeeded), and no build request or report is left on the work
// stream. The ceiling runs too, at a small size.
func TestScheduleThroughTheMesh(t *testing.T) {
	const n = 500
	_, file, _, _ := runtime.Caller(0)
	conf := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "deploy", "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	checked := false
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				t.Logf("%s ends:\n%s", filepath.Base(l), tail(l, 15))
			}
		}
	})
	res, err := Run(ctx, Config{
		Bin: build(t), NATSConf: conf, Dir: dir, N: n, Seed: 3, CeilingN: 2000,
		Progress: func(format string, args ...any) { t.Logf(format, args...) },
		Check: func(ctx context.Context, p *bench.Pipeline, g *graphgen.Graph) error {
			checked = true
			checkOutcome(ctx, t, p, g)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the outcome was never checked")
	}
	if res.N != n || res.CeilingRate <= 0 || res.MeanData <= 0 {
		t.Errorf("result %+v: want N %d and a ceiling measured on sampled events", res, n)
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "ekaci-ingress", "ekaci-router", "ekaci-builder", "ekaci-recorder", "bench"} {
		if _, ok := res.CPU[name]; !ok {
			t.Errorf("no CPU time of %s in %v", name, res.CPU)
		}
	}
	t.Logf("%d drvs in %.1f s (%.0f drv/s, %.1f msgs/drv); ceiling %.0f msg/s; ratio %.0f%% (not asserted)",
		res.N, res.Seconds, res.Rate, res.MsgsPerDrv, res.CeilingRate, 100*res.Ratio)
}

func checkOutcome(ctx context.Context, t *testing.T, p *bench.Pipeline, g *graphgen.Graph) {
	t.Helper()
	histories := map[string][]*eventsv1.Event{}
	facts := map[string]map[string]int{}
	err := p.Events.Read(ctx, 0, []string{eventlog.KindFilter(eventlog.Drv)}, func(rec eventlog.Record) error {
		histories[rec.ID] = append(histories[rec.ID], rec.Event)
		if facts[rec.ID] == nil {
			facts[rec.ID] = map[string]int{}
		}
		facts[rec.ID][rec.Fact]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(histories) != len(g.Nodes) {
		t.Errorf("%d derivations in the log, want the graph's %d", len(histories), len(g.Nodes))
	}
	want := map[string]int{
		string(buildstate.KindDiscovered): 1, string(buildstate.KindBuildable): 1,
		string(buildstate.KindBuildStarted): 1, string(buildstate.KindBuildSucceeded): 1,
	}
	wrong := 0
	for i := range g.Nodes {
		id, _ := bench.Discovered(g, i)
		cur, err := buildstate.Fold(histories[id])
		bad := err != nil || cur.State != buildstate.Succeeded || cur.Attempt != 1 || len(facts[id]) != len(want)
		for fact, k := range want {
			bad = bad || facts[id][fact] != k
		}
		if bad {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s: %v attempt %d (fold error %v), facts %v; want Succeeded on attempt 1 with facts %v",
					g.Nodes[i].Name, cur.State, cur.Attempt, err, facts[id], want)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d derivations wrong", wrong, len(g.Nodes))
	}
	// Every request was taken and acknowledged, every report recorded:
	// the work queue empties (the last acks may land just after the last
	// fact, hence the wait).
	js := p.Events.JetStream()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := js.Stream(ctx, eventlog.WorkStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s still holds %d messages: %s", eventlog.WorkStream, info.State.Msgs, pending(ctx, s))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pending lists the consumers of s with messages pending or unacknowledged.
func pending(ctx context.Context, s jetstream.Stream) string {
	out := ""
	l := s.ListConsumers(ctx)
	for c := range l.Info() {
		if c.NumPending > 0 || c.NumAckPending > 0 {
			out += fmt.Sprintf("%s: %d pending, %d unacknowledged; ", c.Name, c.NumPending, c.NumAckPending)
		}
	}
	return out
}
