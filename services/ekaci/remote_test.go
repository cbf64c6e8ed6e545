package ekaci_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/ekaci"
)

// TestUnhealthyRemoteBuilderGetsNoWork configures a remote builder that
// cannot be reached: work any local pool can take builds locally; work
// only it can take waits in its queue, not started and not failed.
func TestUnhealthyRemoteBuilderGetsNoWork(t *testing.T) {
	requireNix(t)
	ms, err := machines.Parse("ssh://nonexistent.invalid " + service.CurrentSystem() + " - 2 1 big-parallel")
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, t.TempDir(), func(c *ekaci.Config) { c.Machines = ms })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	repo := makeRepo(t, map[string]string{
		".ekaci/config.json": `{"jobs": {"main": {"file": "default.nix"}}}`,
		"default.nix": `let mk = name: extra: derivation ({ inherit name; system = builtins.currentSystem; salt = "@SALT@"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; } // extra);
in { plain = mk "plain" { }; big = mk "big" { requiredSystemFeatures = [ "big-parallel" ]; }; }`,
	})
	cr, err := ekaci.Resolve(ctx, ekaci.Request{Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekaci.Submit(ctx, h.app.Events(), cr); err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{} // drv name -> id
	for len(byName) < 2 && ctx.Err() == nil {
		_ = h.app.Events().Read(ctx, 0, []string{eventlog.FactFilter(eventlog.Drv, "discovered")}, func(r eventlog.Record) error {
			byName[r.Event.GetDrvDiscovered().GetName()] = r.ID
			return nil
		})
		time.Sleep(50 * time.Millisecond)
	}
	facts := func(name string) []string {
		recs, _, err := h.app.Events().Load(ctx, eventlog.Drv, byName[name])
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.Fact)
		}
		return out
	}
	for !slices.Contains(facts("plain"), "build_succeeded") {
		if ctx.Err() != nil {
			t.Fatalf("plain never built locally: %v", facts("plain"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Give the remote pool every chance to (wrongly) start it.
	time.Sleep(2 * time.Second)
	if got := facts("big"); !slices.Equal(got, []string{"discovered", "buildable"}) {
		t.Fatalf("big, which only the unreachable builder can take: %v, want it waiting as buildable", got)
	}
	cons, err := h.app.Events().JetStream().Consumer(ctx, eventlog.WorkStream, "builder-"+eventlog.SystemToken(service.CurrentSystem())+"-remote")
	if err != nil {
		t.Fatalf("the remote pool's consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if waiting := int(info.NumPending) + info.NumAckPending; waiting != 1 {
		t.Fatalf("remote queue holds %d builds, want big waiting there", waiting)
	}
}
