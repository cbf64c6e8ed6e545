package router

import (
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

func TestRoute(t *testing.T) {
	local := Builder{Name: "local", Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Systems: []string{"x86_64-linux"}, Features: []string{"kvm"}, MaxJobs: 2}
	fod := Builder{Name: "fod", Class: workv1.BuildClass_BUILD_CLASS_FOD, Systems: []string{"x86_64-linux"}}
	remote := Builder{Name: "ssh://r1", Class: workv1.BuildClass_BUILD_CLASS_REMOTE, Systems: []string{"x86_64-linux", "aarch64-linux"}, Features: []string{"big-parallel"}}
	gpu := Builder{Name: "ssh://gpu", Class: workv1.BuildClass_BUILD_CLASS_REMOTE, Systems: []string{"x86_64-linux"}, Features: []string{"cuda"}, Mandatory: []string{"cuda"}}
	all := []Builder{local, fod, remote, gpu}
	idle := View{}
	full := View{LocalBusy: func(string) int { return 2 }}
	r1Down := View{Healthy: func(name string) bool { return name != "ssh://r1" }, LocalBusy: func(string) int { return 5 }}
	const (
		L = workv1.BuildClass_BUILD_CLASS_LOCAL
		F = workv1.BuildClass_BUILD_CLASS_FOD
		R = workv1.BuildClass_BUILD_CLASS_REMOTE
	)
	tests := []struct {
		name     string
		builders []Builder
		view     View
		b        *eventsv1.DrvBuildable
		want     workv1.BuildClass
		ok       bool
	}{
		{"fod to fod pool", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, F, true},
		{"fod without pool goes local", []Builder{local}, idle, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, L, true},
		{"preferLocalBuild to local even when busy", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux", PreferLocalBuild: true}, L, true},
		{"plain goes local while it has a free slot", all, idle, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
		{"plain goes remote when local is full", all, full, &eventsv1.DrvBuildable{System: "x86_64-linux"}, R, true},
		{"plain stays local when the remote is down", all, r1Down, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
		{"plain without remotes to local when full", []Builder{local, fod}, full, &eventsv1.DrvBuildable{System: "x86_64-linux"}, L, true},
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
			got, ok := Route(tt.builders, tt.b, tt.view)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Route = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBuildSubject(t *testing.T) {
	if got := BuildSubject("x86_64-linux", workv1.BuildClass_BUILD_CLASS_FOD); got != "ekaci.work.build.x86_64-linux.fod" {
		t.Fatalf("BuildSubject = %s", got)
	}
}
