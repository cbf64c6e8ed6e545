// Package graphgen writes nixpkgs-shaped dependency graphs: a few hundred
// bootstrap roots everything depends on, layers 20–40 deep, fan-in skewed
// like a power law (a few derivations with thousands of dependents, most
// with a handful), 5–15 inputs per derivation, some fixed-output
// derivations, two systems. The same graph comes out as a Nix file of
// trivial /bin/sh derivations (to build for real at a few thousand) or as
// records the evaluator would emit (to drive the scheduler at 100,000+).
package graphgen

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
)

// Params shape a graph.
type Params struct {
	N         int     // derivations
	Roots     int     // bootstrap derivations with no inputs (default min(300, N/10))
	Layers    int     // depth (default 30)
	MinInputs int     // default 5
	MaxInputs int     // default 15
	FODShare  float64 // share of fixed-output derivations (default 0.05)
	// Systems and the share of each (default x86_64-linux 0.85,
	// aarch64-linux 0.15).
	Systems []string
	Shares  []float64
	Seed    uint64
}

// Node is one derivation.
type Node struct {
	ID     int
	Name   string
	Layer  int
	System string
	FOD    bool
	Inputs []int // IDs, all from earlier layers
}

// Graph is a generated graph; Nodes are in dependency order.
type Graph struct {
	Nodes []Node
}

func (p Params) withDefaults() Params {
	if p.Roots <= 0 {
		p.Roots = min(300, max(1, p.N/10))
	}
	if p.Layers <= 0 {
		p.Layers = 30
	}
	if p.MinInputs <= 0 {
		p.MinInputs = 5
	}
	if p.MaxInputs < p.MinInputs {
		p.MaxInputs = max(15, p.MinInputs)
	}
	if p.FODShare == 0 {
		p.FODShare = 0.05
	}
	if len(p.Systems) == 0 {
		p.Systems, p.Shares = []string{"x86_64-linux", "aarch64-linux"}, []float64{0.85, 0.15}
	}
	return p
}

// Generate makes a graph. The same Params give the same graph.
func Generate(p Params) *Graph {
	p = p.withDefaults()
	r := rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15))
	g := &Graph{Nodes: make([]Node, 0, p.N)}
	// Roots: the bootstrap, layer 0, no inputs.
	for i := 0; i < p.Roots && i < p.N; i++ {
		g.Nodes = append(g.Nodes, Node{ID: i, Layer: 0})
	}
	// The rest spread over the layers; each takes inputs from earlier
	// nodes, preferring early (popular) ones along a Zipf law, plus one
	// from the layer just below, so the depth is real.
	rest := p.N - len(g.Nodes)
	perLayer := max(1, rest/max(1, p.Layers-1))
	layerStart := []int{0, len(g.Nodes)}
	for len(g.Nodes) < p.N {
		id := len(g.Nodes)
		layer := min(p.Layers-1, 1+(id-p.Roots)/perLayer)
		if layer >= len(layerStart) {
			layerStart = append(layerStart, id)
		}
		prevStart := layerStart[layer-1]
		prevEnd := layerStart[layer]
		n := Node{ID: id, Layer: layer}
		if r.Float64() < p.FODShare {
			// A fetch: fixed-output, built with a couple of bootstrap tools.
			n.FOD = true
			for range 2 {
				in := r.IntN(min(p.Roots, id))
				if !slices.Contains(n.Inputs, in) {
					n.Inputs = append(n.Inputs, in)
				}
			}
			sort.Ints(n.Inputs)
			g.Nodes = append(g.Nodes, n)
			continue
		}
		want := p.MinInputs + r.IntN(p.MaxInputs-p.MinInputs+1)
		seen := map[int]bool{}
		add := func(in int) {
			if !seen[in] {
				seen[in] = true
				n.Inputs = append(n.Inputs, in)
			}
		}
		add(prevStart + r.IntN(max(1, prevEnd-prevStart)))
		zipf := rand.NewZipf(r, 1.3, 4, uint64(prevEnd-1))
		for tries := 0; len(n.Inputs) < min(want, prevEnd) && tries < want*4; tries++ {
			add(int(zipf.Uint64()))
		}
		sort.Ints(n.Inputs)
		g.Nodes = append(g.Nodes, n)
	}
	// Systems: a node's system is drawn once; inputs of another system
	// stand for cross-compiled or builtin tools and are kept.
	for i := range g.Nodes {
		x, acc := r.Float64(), 0.0
		g.Nodes[i].System = p.Systems[len(p.Systems)-1]
		for j, s := range p.Shares {
			acc += s
			if x < acc {
				g.Nodes[i].System = p.Systems[j]
				break
			}
		}
		g.Nodes[i].Name = fmt.Sprintf("g%d-l%d", i, g.Nodes[i].Layer)
	}
	return g
}

// Stats summarizes a graph's shape.
type Stats struct {
	Nodes, Edges, Roots, FOD, Depth int
	MaxFanIn                        int // the most dependents of any node
	MedianFanIn                     int
}

// Stats measures g.
func (g *Graph) Stats() Stats {
	s := Stats{Nodes: len(g.Nodes)}
	fanIn := make([]int, len(g.Nodes))
	for _, n := range g.Nodes {
		s.Edges += len(n.Inputs)
		if len(n.Inputs) == 0 {
			s.Roots++
		}
		if n.FOD {
			s.FOD++
		}
		s.Depth = max(s.Depth, n.Layer+1)
		for _, in := range n.Inputs {
			fanIn[in]++
		}
	}
	sorted := append([]int(nil), fanIn...)
	sort.Ints(sorted)
	if len(sorted) > 0 {
		s.MaxFanIn, s.MedianFanIn = sorted[len(sorted)-1], sorted[len(sorted)/2]
	}
	return s
}

// Downstream returns every node that depends on id, directly or not.
func (g *Graph) Downstream(id int) []int {
	users := make([][]int, len(g.Nodes))
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			users[in] = append(users[in], n.ID)
		}
	}
	seen := map[int]bool{id: true}
	queue := []int{id}
	var out []int
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		for _, u := range users[x] {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
				queue = append(queue, u)
			}
		}
	}
	sort.Ints(out)
	return out
}

// WriteNix writes g as a Nix file: one attribute per derivation, every one
// a trivial /bin/sh builder on builtins.currentSystem (so it builds here,
// whatever system the graph assigned), fixed-output ones with a known hash
// of their content. salt makes the derivations new to the store; fodHash
// returns the flat sha256 (hex) of "fod-<salt>-<name>".
func (g *Graph) WriteNix(w io.Writer, salt string, fodHash func(content string) string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "let\n  salt = %q;\n  system = builtins.currentSystem;\n", salt)
	b.WriteString("  mk = name: inputs: derivation { inherit name system salt inputs; builder = \"/bin/sh\"; args = [ \"-c\" \"echo $name > $out\" ]; };\n")
	b.WriteString("  fod = name: inputs: hash: derivation { inherit name system inputs; builder = \"/bin/sh\"; args = [ \"-c\" \"printf fod-${salt}-${name} > $out\" ]; outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; outputHash = hash; };\n")
	b.WriteString("in rec {\n")
	for _, n := range g.Nodes {
		ins := make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			ins[i] = attr(in)
		}
		if n.FOD {
			fmt.Fprintf(&b, "  %s = fod %q [ %s ] %q;\n", attr(n.ID), n.Name, strings.Join(ins, " "), fodHash(fmt.Sprintf("fod-%s-%s", salt, n.Name)))
			continue
		}
		fmt.Fprintf(&b, "  %s = mk %q [ %s ];\n", attr(n.ID), n.Name, strings.Join(ins, " "))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func attr(id int) string { return fmt.Sprintf("d%d", id) }

// Attr is the attribute name of node id in WriteNix's file.
func Attr(id int) string { return attr(id) }

// Leaves are the nodes nothing depends on: building them builds all.
func (g *Graph) Leaves() []int {
	used := make([]bool, len(g.Nodes))
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			used[in] = true
		}
	}
	var out []int
	for i, u := range used {
		if !u {
			out = append(out, i)
		}
	}
	return out
}
