package router

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
)

func TestRoute(t *testing.T) {
	local := machines.Route{Name: "local", Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Systems: []string{"x86_64-linux"}, Features: []string{"kvm"}, MaxJobs: 2}
	fod := machines.Route{Name: "fod", Class: workv1.BuildClass_BUILD_CLASS_FOD, Systems: []string{"x86_64-linux"}}
	remote := machines.Route{Name: "ssh://r1", Class: workv1.BuildClass_BUILD_CLASS_REMOTE, Systems: []string{"x86_64-linux", "aarch64-linux"}, Features: []string{"big-parallel"}}
	gpu := machines.Route{Name: "ssh://gpu", Class: workv1.BuildClass_BUILD_CLASS_REMOTE, Systems: []string{"x86_64-linux"}, Features: []string{"cuda"}, Mandatory: []string{"cuda"}}
	all := []machines.Route{local, fod, remote, gpu}
	idle := View{}
	full := View{LocalBusy: func(string) int { return 2 }}
	r1Down := View{Healthy: func(name string) bool { return name != "ssh://r1" }, LocalBusy: func(string) int { return 5 }}
	const (
		L = workv1.BuildClass_BUILD_CLASS_LOCAL
		F = workv1.BuildClass_BUILD_CLASS_FOD
		R = workv1.BuildClass_BUILD_CLASS_REMOTE
	)
	tests := []struct {
		name   string
		routes []machines.Route
		view   View
		b      *eventsv1.DrvBuildable
		want   workv1.BuildClass
		ok     bool
	}{
		{"fod to fod pool", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, F, true},
		{"fod without pool goes local", []machines.Route{local}, idle, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, L, true},
		{"preferLocalBuild to local even when busy", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux", PreferLocalBuild: true}, L, true},
		{"plain goes local while it has a free slot", all, idle, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
		{"plain goes remote when local is full", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux"}, R, true},
		{"plain stays local when the remote is down", all, r1Down, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
		{"plain without remotes to local when full", []machines.Route{local, fod}, full, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
		{"feature only remote has", all, idle, &eventsv1.DrvBuildable{System: "x86_64-linux", PreferLocalBuild: true, RequiredSystemFeatures: []string{"big-parallel"}}, R, true},
		{"feature only local has", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux", RequiredSystemFeatures: []string{"kvm"}}, L, true},
		{"mandatory feature asked for", all, idle, &eventsv1.DrvBuildable{System: "x86_64-linux", RequiredSystemFeatures: []string{"cuda"}}, R, true},
		{"other system on remote", all, idle, &eventsv1.DrvBuildable{System: "aarch64-linux"}, R, true},
		{"only an unhealthy remote can: queued for it", all, r1Down, &eventsv1.DrvBuildable{System: "aarch64-linux"}, R, true},
		{"unknown system unsatisfiable", all, idle, &eventsv1.DrvBuildable{System: "riscv64-linux"}, 0, false},
		{"unmet feature unsatisfiable", all, idle, &eventsv1.DrvBuildable{System: "x86_64-linux", RequiredSystemFeatures: []string{"tpu"}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Route(tt.routes, tt.b, tt.view)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Route = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBuildSubject(t *testing.T) {
	if got := eventlog.BuildSubject("x86_64-linux", workv1.BuildClass_BUILD_CLASS_FOD); got != "ekaci.work.build.x86_64-linux.fod" {
		t.Fatalf("BuildSubject = %s", got)
	}
}

// TestUnqueueableBuildIsInterrupted is finding 8 of the core review for
// the router: a buildable derivation whose request could not be queued
// was dropped after the last retry, Buildable forever, its change never
// concluded.
func TestUnqueueableBuildIsInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	// Nothing can be queued: the work stream is gone.
	if err := js.DeleteStream(ctx, eventlog.WorkStream); err != nil {
		t.Fatal(err)
	}
	drv := func(n string) (string, string) {
		id := strings.Repeat(n, 32)
		return id, "/nix/store/" + id + "-" + n + ".drv"
	}
	add := func(id string, ev *eventsv1.Event) {
		t.Helper()
		if _, err := log.Append(ctx, id, ev); err != nil {
			t.Fatal(err)
		}
	}
	a, aPath := drv("a")
	b, bPath := drv("b")
	for _, d := range []struct{ id, path string }{{a, aPath}, {b, bPath}} {
		add(d.id, &eventsv1.Event{Id: "buildable-" + d.id, Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{
			DrvPath: d.path, System: "x86_64-linux", Attempt: 1}}})
	}
	// b moved on meanwhile (its request landed once and a builder took it):
	// giving up on its buildable event must not interrupt it.
	add(b, &eventsv1.Event{Id: "started-" + b, Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}})

	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Config{Events: log, Logger: zerolog.Nop(), Backoff: 50 * time.Millisecond, MaxDeliver: 2,
			Routes: []machines.Route{{Name: "local", Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Systems: []string{"x86_64-linux"}, MaxJobs: 1}}})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	}()
	facts := func(id, fact string) []*eventsv1.Event {
		recs, _, err := log.Load(ctx, eventlog.Drv, id)
		if err != nil {
			t.Fatal(err)
		}
		var out []*eventsv1.Event
		for _, r := range recs {
			if r.Fact == fact {
				out = append(out, r.Event)
			}
		}
		return out
	}
	natstest.Eventually(t, 30*time.Second, func() bool { return len(facts(a, "interrupted")) > 0 }, "a is interrupted")
	in := facts(a, "interrupted")[0].GetDrvInterrupted()
	if in.GetKind() != eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE || !strings.Contains(in.GetDetail(), "could not queue its build request") {
		t.Fatalf("a interrupted with %v", in)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		c, err := js.Consumer(ctx, eventlog.EventsStream, "router")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the router settled every message")
	if got := facts(b, "interrupted"); len(got) != 0 {
		t.Fatalf("b, building, was interrupted: %v", got)
	}
}

// TestBuilderDurable pins the builder pools' consumer names the router
// reads backlogs from: a renamed durable orphans a work-queue consumer.
func TestBuilderDurable(t *testing.T) {
	for _, tc := range []struct {
		system string
		class  workv1.BuildClass
		want   string
	}{
		{"x86_64-linux", workv1.BuildClass_BUILD_CLASS_LOCAL, "builder-x86_64-linux-local"},
		{"aarch64-darwin", workv1.BuildClass_BUILD_CLASS_FOD, "builder-aarch64-darwin-fod"},
	} {
		if got := eventlog.BuilderDurable(tc.system, tc.class); got != tc.want {
			t.Errorf("BuilderDurable(%s, %s) = %s, want %s", tc.system, tc.class, got, tc.want)
		}
	}
}
