package closure

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOrder checks order against its definition on random graphs: next is
// always the smallest path of those whose inputs are all out.
func TestOrder(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 1 + rng.IntN(300)
		// Paths in random order, so that path order and discovery order differ.
		names := rng.Perm(n)
		w := &walker{}
		inputs := make([][]int32, n)
		for i := range n {
			w.nodes = append(w.nodes, node{path: fmt.Sprintf("/nix/store/%04d.drv", names[i])})
			// Node i may only depend on nodes found before it: a DAG.
			for range rng.IntN(min(i, 6) + 1) {
				if in := int32(rng.IntN(max(i, 1))); i > 0 && !slices.Contains(inputs[i], in) {
					inputs[i] = append(inputs[i], in)
				}
			}
		}
		for i := range n {
			nd := &w.nodes[i]
			nd.drv = &Drv{Path: nd.path}
			nd.ins0 = int32(len(w.edges))
			w.edges = append(w.edges, inputs[i]...)
			nd.ins1 = int32(len(w.edges))
		}
		var got []string
		for _, d := range w.order() {
			got = append(got, d.Path)
		}
		var want []string
		out := make([]bool, n)
		for len(want) < n {
			next := -1
			for i := range n {
				if out[i] || (next >= 0 && w.nodes[i].path > w.nodes[next].path) {
					continue
				}
				if !slices.ContainsFunc(inputs[i], func(in int32) bool { return !out[in] }) {
					next = i
				}
			}
			out[next] = true
			want = append(want, w.nodes[next].path)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: order() = %v, want %v", seed, got, want)
		}
	}
}
