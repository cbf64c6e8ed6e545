package closure

import "container/heap"

// order returns the walked derivations inputs first (Kahn's algorithm):
// of the derivations whose inputs are all out, the smallest path goes
// next.
func (w *walker) order() []Drv {
	n := len(w.nodes)
	// users[first[i]:first[i+1]] are the nodes that have node i as input.
	first := make([]int32, n+1)
	for _, in := range w.edges {
		first[in+1]++
	}
	for i := range n {
		first[i+1] += first[i]
	}
	users := make([]int32, len(w.edges))
	next := append([]int32(nil), first[:n]...)
	indeg := make([]int32, n)
	ready := &readyHeap{nodes: w.nodes}
	for i := range w.nodes {
		nd := &w.nodes[i]
		indeg[i] = nd.ins1 - nd.ins0
		if indeg[i] == 0 {
			ready.ids = append(ready.ids, int32(i))
		}
		for _, in := range w.edges[nd.ins0:nd.ins1] {
			users[next[in]] = int32(i)
			next[in]++
		}
	}
	heap.Init(ready)
	out := make([]Drv, 0, n)
	for len(ready.ids) > 0 {
		i := heap.Pop(ready).(int32)
		out = append(out, *w.nodes[i].drv)
		for _, u := range users[first[i]:first[i+1]] {
			if indeg[u]--; indeg[u] == 0 {
				heap.Push(ready, u)
			}
		}
	}
	return out
}

// readyHeap is a min-heap of node indices by path.
type readyHeap struct {
	nodes []node
	ids   []int32
}

func (h *readyHeap) Len() int           { return len(h.ids) }
func (h *readyHeap) Less(a, b int) bool { return h.nodes[h.ids[a]].path < h.nodes[h.ids[b]].path }
func (h *readyHeap) Swap(a, b int)      { h.ids[a], h.ids[b] = h.ids[b], h.ids[a] }
func (h *readyHeap) Push(x any)         { h.ids = append(h.ids, x.(int32)) }
func (h *readyHeap) Pop() any {
	x := h.ids[len(h.ids)-1]
	h.ids = h.ids[:len(h.ids)-1]
	return x
}
