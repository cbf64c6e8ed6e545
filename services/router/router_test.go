package router

import (
	"testing"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

func TestRoute(t *testing.T) {
	local := Builder{Name: "local", Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Systems: []string{"x86_64-linux"}, Features: []string{"kvm"}}
	fod := Builder{Name: "fod", Class: workv1.BuildClass_BUILD_CLASS_FOD, Systems: []string{"x86_64-linux"}}
	remote := Builder{Name: "r1", Class: workv1.BuildClass_BUILD_CLASS_REMOTE, Systems: []string{"x86_64-linux", "aarch64-linux"}, Features: []string{"big-parallel"}}
	all := []Builder{local, fod, remote}
	tests := []struct {
		name     string
		builders []Builder
		b        *eventsv1.DrvBuildable
		want     workv1.BuildClass
		ok       bool
	}{
		{"fod to fod pool", all, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, workv1.BuildClass_BUILD_CLASS_FOD, true},
		{"fod without pool goes local", []Builder{local}, &eventsv1.DrvBuildable{System: "x86_64-linux", FixedOutput: true}, workv1.BuildClass_BUILD_CLASS_LOCAL, true},
		{"preferLocalBuild to local", all, &eventsv1.DrvBuildable{System: "x86_64-linux", PreferLocalBuild: true}, workv1.BuildClass_BUILD_CLASS_LOCAL, true},
		{"plain to remote", all, &eventsv1.DrvBuildable{System: "x86_64-linux"}, workv1.BuildClass_BUILD_CLASS_REMOTE, true},
		{"plain without remotes to local", []Builder{local, fod}, &eventsv1.DrvBuildable{System: "x86_64-linux"}, workv1.BuildClass_BUILD_CLASS_LOCAL, true},
		{"feature only remote has", all, &eventsv1.DrvBuildable{System: "x86_64-linux", PreferLocalBuild: true, RequiredSystemFeatures: []string{"big-parallel"}}, workv1.BuildClass_BUILD_CLASS_REMOTE, true},
		{"feature only local has", all, &eventsv1.DrvBuildable{System: "x86_64-linux", RequiredSystemFeatures: []string{"kvm"}}, workv1.BuildClass_BUILD_CLASS_LOCAL, true},
		{"other system on remote", all, &eventsv1.DrvBuildable{System: "aarch64-linux"}, workv1.BuildClass_BUILD_CLASS_REMOTE, true},
		{"unknown system unsatisfiable", all, &eventsv1.DrvBuildable{System: "riscv64-linux"}, 0, false},
		{"unmet feature unsatisfiable", all, &eventsv1.DrvBuildable{System: "x86_64-linux", RequiredSystemFeatures: []string{"cuda"}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Route(tt.builders, tt.b)
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
