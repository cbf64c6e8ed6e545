package machines

import (
	"fmt"
	"slices"
	"testing"

	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

const (
	local  = workv1.BuildClass_BUILD_CLASS_LOCAL
	fod    = workv1.BuildClass_BUILD_CLASS_FOD
	remote = workv1.BuildClass_BUILD_CLASS_REMOTE
)

func TestTopology(t *testing.T) {
	big := Machine{URI: "ssh://big", Systems: []string{"x86_64-linux", "aarch64-linux"}, MaxJobs: 8, Features: []string{"kvm", "cuda"}, MandatoryFeatures: []string{"cuda"}}
	small := Machine{URI: "ssh://small", Systems: []string{"x86_64-linux"}, MaxJobs: 2}
	tests := []struct {
		name   string
		topo   Topology
		pools  []Pool
		routes []string // name class systems mandatory jobs
	}{
		{"local and fod", Topology{Systems: []string{"x86_64-linux"}, Features: []string{"kvm"}, MaxJobs: 2, FODMaxJobs: 1},
			[]Pool{{"x86_64-linux", local, 2}, {"x86_64-linux", fod, 1}},
			[]string{"local LOCAL [x86_64-linux] [kvm] [] 2", "fod FOD [x86_64-linux] [kvm] [] 1"}},
		{"no fod pool: no fod route either", Topology{Systems: []string{"x86_64-linux"}, MaxJobs: 3},
			[]Pool{{"x86_64-linux", local, 3}},
			[]string{"local LOCAL [x86_64-linux] [] [] 3"}},
		{"max jobs at least 1", Topology{Systems: []string{"x86_64-linux"}, MaxJobs: 0, FODMaxJobs: -1},
			[]Pool{{"x86_64-linux", local, 1}},
			[]string{"local LOCAL [x86_64-linux] [] [] 1"}},
		{"two systems and remotes", Topology{Systems: []string{"x86_64-linux", "i686-linux"}, MaxJobs: 2, FODMaxJobs: 1, Remote: []Machine{big, small}},
			[]Pool{{"x86_64-linux", local, 2}, {"x86_64-linux", fod, 1}, {"i686-linux", local, 2}, {"i686-linux", fod, 1},
				{"aarch64-linux", remote, 8}, {"x86_64-linux", remote, 10}},
			[]string{"local LOCAL [x86_64-linux i686-linux] [] [] 2", "fod FOD [x86_64-linux i686-linux] [] [] 1",
				"ssh://big REMOTE [x86_64-linux aarch64-linux] [kvm cuda] [cuda] 8", "ssh://small REMOTE [x86_64-linux] [] [] 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.topo.Pools(); !slices.Equal(got, tt.pools) {
				t.Errorf("Pools = %v, want %v", got, tt.pools)
			}
			var got []string
			for _, r := range tt.topo.Routes() {
				got = append(got, fmt.Sprintf("%s %s %v %v %v %d", r.Name, short(r.Class), r.Systems, r.Features, r.Mandatory, r.MaxJobs))
			}
			if !slices.Equal(got, tt.routes) {
				t.Errorf("Routes = %q, want %q", got, tt.routes)
			}
			// Every queue a route can fill has a pool that empties it, and
			// every pool is a queue some route fills.
			pools := tt.topo.Pools()
			has := func(sys string, c workv1.BuildClass) bool {
				return slices.ContainsFunc(pools, func(p Pool) bool { return p.System == sys && p.Class == c })
			}
			filled := 0
			for _, r := range tt.topo.Routes() {
				for _, sys := range r.Systems {
					if !has(sys, r.Class) {
						t.Errorf("route %s sends %s work to %s, which no pool serves", r.Name, sys, short(r.Class))
					}
				}
			}
			for _, p := range pools {
				for _, r := range tt.topo.Routes() {
					if r.Class == p.Class && slices.Contains(r.Systems, p.System) {
						filled++
						break
					}
				}
			}
			if filled != len(pools) {
				t.Errorf("%d of %d pools are filled by a route", filled, len(pools))
			}
		})
	}
}

func short(c workv1.BuildClass) string {
	return map[workv1.BuildClass]string{local: "LOCAL", fod: "FOD", remote: "REMOTE"}[c]
}

func TestRouteCan(t *testing.T) {
	gpu := Route{Systems: []string{"x86_64-linux"}, Features: []string{"cuda", "kvm"}, Mandatory: []string{"cuda"}}
	tests := []struct {
		name     string
		system   string
		required []string
		want     bool
	}{
		{"mandatory asked for", "x86_64-linux", []string{"cuda"}, true},
		{"mandatory not asked for", "x86_64-linux", nil, false},
		{"unsupported feature", "x86_64-linux", []string{"cuda", "tpu"}, false},
		{"other system", "aarch64-linux", []string{"cuda"}, false},
		{"builtin builds anywhere", "builtin", []string{"cuda"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gpu.Can(tt.system, tt.required); got != tt.want {
				t.Errorf("Can(%s, %v) = %v, want %v", tt.system, tt.required, got, tt.want)
			}
		})
	}
	// A machine is not a route: "builtin" is the router's business.
	m := Machine{Systems: []string{"x86_64-linux"}}
	if m.Can("builtin", nil) {
		t.Error("Machine.Can(builtin) = true, want false")
	}
}
