package machines

import (
	"slices"
	"sort"

	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// Topology is the builders one ekaci deployment sends work to: the local
// and fixed-output pools of the systems it builds here, and the remote
// machines. The router's routes and the builder's pools both come from
// it, so the queues the router fills are the queues builders pull from.
type Topology struct {
	// Systems and Features are what the local and fixed-output pools
	// build (Nix systems; system features such as kvm).
	Systems  []string
	Features []string
	// MaxJobs is how many builds the local pool of each system runs at
	// once (at least 1).
	MaxJobs int
	// FODMaxJobs is how many fixed-output builds each system's pool runs
	// at once; 0 serves no fixed-output pool (a builder host that leaves
	// fetches to another), < 0 is refused like 0.
	FODMaxJobs int
	// Remote are the machines of a Nix machines file; each system they
	// serve gets a remote pool that runs as many builds as they take
	// together.
	Remote []Machine
}

// Pool is one work queue a builder pulls from
// (ekaci.work.build.<system>.<class>) and how many of its builds run at
// once.
type Pool struct {
	System  string
	Class   workv1.BuildClass
	MaxJobs int
}

// Route is a builder the router may send work to: the local pool, the
// fixed-output pool, or one remote machine (Name is its URI, the name its
// health is kept under).
type Route struct {
	Name     string
	Class    workv1.BuildClass
	Systems  []string
	Features []string
	// Mandatory features: the builder takes only derivations that require
	// every one of them (Nix's mandatoryFeatures).
	Mandatory []string
	MaxJobs   int
}

// Pools are the queues of t a builder serves: for each system the local
// pool and, unless FODMaxJobs is 0, the fixed-output pool; and for each
// system the remote machines serve, one remote pool.
func (t Topology) Pools() []Pool {
	var out []Pool
	for _, sys := range t.Systems {
		out = append(out, Pool{System: sys, Class: workv1.BuildClass_BUILD_CLASS_LOCAL, MaxJobs: max(t.MaxJobs, 1)})
		if t.FODMaxJobs > 0 {
			out = append(out, Pool{System: sys, Class: workv1.BuildClass_BUILD_CLASS_FOD, MaxJobs: t.FODMaxJobs})
		}
	}
	jobs := map[string]int{}
	for _, m := range t.Remote {
		for _, sys := range m.Systems {
			jobs[sys] += m.MaxJobs
		}
	}
	systems := make([]string, 0, len(jobs))
	for sys := range jobs {
		systems = append(systems, sys)
	}
	sort.Strings(systems)
	for _, sys := range systems {
		out = append(out, Pool{System: sys, Class: workv1.BuildClass_BUILD_CLASS_REMOTE, MaxJobs: jobs[sys]})
	}
	return out
}

// Routes are the builders of t the router chooses among: the local pool,
// the fixed-output pool unless FODMaxJobs is 0 (fixed-output derivations
// then build on the local pool), and one route per remote machine.
func (t Topology) Routes() []Route {
	out := []Route{{Name: "local", Class: workv1.BuildClass_BUILD_CLASS_LOCAL, Systems: t.Systems, Features: t.Features, MaxJobs: max(t.MaxJobs, 1)}}
	if t.FODMaxJobs > 0 {
		out = append(out, Route{Name: "fod", Class: workv1.BuildClass_BUILD_CLASS_FOD, Systems: t.Systems, Features: t.Features, MaxJobs: t.FODMaxJobs})
	}
	for _, m := range t.Remote {
		out = append(out, Route{Name: m.URI, Class: workv1.BuildClass_BUILD_CLASS_REMOTE,
			Systems: m.Systems, Features: m.Features, Mandatory: m.MandatoryFeatures, MaxJobs: m.MaxJobs})
	}
	return out
}

// Can reports whether r builds for system with every feature required.
// Nix builds system "builtin" (builtin:fetchurl) on any machine.
func (r Route) Can(system string, required []string) bool {
	if system != "builtin" && !slices.Contains(r.Systems, system) {
		return false
	}
	return features(r.Features, r.Mandatory, required)
}

// features reports whether a builder with the supported and mandatory
// features given takes a derivation that requires required.
func features(supported, mandatory, required []string) bool {
	for _, f := range required {
		if !slices.Contains(supported, f) {
			return false
		}
	}
	for _, f := range mandatory {
		if !slices.Contains(required, f) {
			return false
		}
	}
	return true
}
