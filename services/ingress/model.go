package ingress

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection/binrow"
)

// layoutVersion is the stored layout of ingress.db (projection.Versioned).
// 0 was JSON node rows keyed by derivation id; 4 is the layout below.
const layoutVersion = 4

var (
	// infos: discovered sequence (8 bytes, big-endian) → the derivation's
	// id and its DrvDiscovered (protobuf); written once, in log order, so
	// the bucket only ever appends. The input lists are the durable copy
	// of the graph's edges: the dependents index is kept in memory and
	// rebuilt from here when the model opens.
	infosBucket = []byte("ingress_infos")
	// ids: drv id → its discovered sequence, for lookups by id.
	idsBucket = []byte("ingress_ids")
	// nodes: discovered sequence → the derivation's state (binary,
	// rewritten as it changes). Keyed by the sequence, not the id, so that
	// derivations discovered together — which are also built together —
	// share leaf pages: a commit rewrites fewer pages than one random page
	// per changed derivation.
	nodesBucket = []byte("ingress_nodes")
)

// Fill factors: infos only appends; node values keep their size as they
// change, so their pages need little room to grow.
const (
	infosFill = 1.0
	nodesFill = 0.9
)

// node is one derivation in the graph model. Every node is in memory; the
// nodes bucket is its durable copy, written for the nodes a batch changed.
type node struct {
	id  string
	key uint64 // stream sequence of its DrvDiscovered; 0 before it is discovered

	drv     buildstate.Drv
	lastSeq uint64 // stream sequence of its last fact
	pending int32  // dependencies not yet succeeded
	// doomed is 1 + the number of the failed (or interrupted, when
	// doomBlocked) derivation whose propagation marked this one, before
	// its own TransitiveFailure (or Blocked) event is back from the log:
	// a dependent discovered in between inherits the verdict from here.
	doomed      int32
	doomBlocked bool
	dirty       bool

	// What routing needs, from its DrvDiscovered.
	path     string
	system   string
	fod      bool
	prefer   bool
	features []string
}

func (n *node) discovered() bool { return n.drv.State != buildstate.None }

// graph holds every derivation and its direct dependents by number.
type graph struct {
	num        map[string]int32
	nodes      []node
	dependents [][]int32
	changed    []int32 // nodes dirtied by the current batch
	systems    map[string]string

	// walks mark visited nodes with a generation instead of a fresh set.
	seen    []uint32
	seenGen uint32
}

func newGraph() *graph { return &graph{num: map[string]int32{}, systems: map[string]string{}} }

func (g *graph) intern(id string) int32 {
	if n, ok := g.num[id]; ok {
		return n
	}
	n := int32(len(g.nodes))
	g.num[id] = n
	g.nodes = append(g.nodes, node{id: id})
	g.dependents = append(g.dependents, nil)
	return n
}

// lookup returns the number of a known id.
func (g *graph) lookup(id string) (int32, bool) {
	n, ok := g.num[id]
	return n, ok
}

func (g *graph) touch(n int32) {
	if !g.nodes[n].dirty {
		g.nodes[n].dirty = true
		g.changed = append(g.changed, n)
	}
}

// addInputs records that n depends on each of inputs.
func (g *graph) addInputs(n int32, inputs []string) {
	for _, in := range inputs {
		i := g.intern(in)
		g.dependents[i] = append(g.dependents[i], n)
	}
}

// setInfo keeps what routing needs from d.
func (g *graph) setInfo(n int32, key uint64, d *eventsv1.DrvDiscovered) {
	nd := &g.nodes[n]
	nd.key, nd.path, nd.fod, nd.prefer = key, d.GetDrvPath(), d.GetFixedOutput(), d.GetPreferLocalBuild()
	sys := d.GetSystem()
	if s, ok := g.systems[sys]; ok {
		sys = s
	} else {
		g.systems[sys] = sys
	}
	nd.system = sys
	if fs := d.GetRequiredSystemFeatures(); len(fs) > 0 {
		nd.features = append([]string(nil), fs...)
	}
}

// info is the part of n's DrvDiscovered a Buildable decision copies.
func (g *graph) info(n int32) *eventsv1.DrvDiscovered {
	nd := &g.nodes[n]
	return &eventsv1.DrvDiscovered{DrvPath: nd.path, System: nd.system, FixedOutput: nd.fod, PreferLocalBuild: nd.prefer, RequiredSystemFeatures: nd.features}
}

// walk visits the transitive dependents of root breadth-first, each once,
// descending only through those visit accepts.
func (g *graph) walk(root int32, visit func(n int32) bool) {
	if len(g.seen) < len(g.nodes) {
		g.seen = append(g.seen, make([]uint32, len(g.nodes)-len(g.seen))...)
	}
	g.seenGen++
	if g.seenGen == 0 { // wrapped: forget every old mark
		clear(g.seen)
		g.seenGen = 1
	}
	gen := g.seenGen
	g.seen[root] = gen
	queue := []int32{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, dep := range g.dependents[cur] {
			if g.seen[dep] == gen {
				continue
			}
			g.seen[dep] = gen
			if g.nodes[dep].discovered() && visit(dep) {
				queue = append(queue, dep)
			}
		}
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }

// flush writes the nodes the batch changed.
func (g *graph) flush(tx *bolt.Tx) error {
	bk := tx.Bucket(nodesBucket)
	bk.FillPercent = nodesFill
	// In key order: each Put then lands on or next to the previous one's page.
	slices.SortFunc(g.changed, func(a, b int32) int { return cmp.Compare(g.nodes[a].key, g.nodes[b].key) })
	var buf []byte
	for _, n := range g.changed {
		nd := &g.nodes[n]
		nd.dirty = false
		if nd.key == 0 {
			return fmt.Errorf("derivation %s changed state before it was discovered", nd.id)
		}
		buf = g.encode(buf[:0], nd)
		// bbolt keeps the value slice until commit: copy it.
		if err := bk.Put(seqKey(nd.key), append([]byte(nil), buf...)); err != nil {
			return err
		}
	}
	g.changed = g.changed[:0]
	return nil
}

// encode is a node's stored state: id, its buildstate.Drv (binrow), byte
// flags (1 doomBlocked), uvarint lastSeq, uvarint pending, doomed's id.
func (g *graph) encode(b []byte, nd *node) []byte {
	b = binrow.AppendString(b, nd.id)
	b = binrow.AppendDrv(b, nd.drv)
	var flags byte
	if nd.doomBlocked {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, nd.lastSeq)
	b = binary.AppendUvarint(b, uint64(nd.pending))
	doomed := ""
	if nd.doomed > 0 {
		doomed = g.nodes[nd.doomed-1].id
	}
	return binrow.AppendString(b, doomed)
}

// decoded is a stored node state.
type decoded struct {
	id          string
	drv         buildstate.Drv
	lastSeq     uint64
	pending     int32
	doomed      string
	doomBlocked bool
}

func decode(v []byte) (decoded, error) {
	r := binrow.NewReader(v)
	var d decoded
	d.id = r.String()
	d.drv = r.Drv()
	d.doomBlocked = r.Byte()&1 != 0
	d.lastSeq = r.Uvarint()
	d.pending = int32(r.Uvarint())
	d.doomed = r.String()
	if err := r.Done(); err != nil {
		return d, fmt.Errorf("decode node: %w", err)
	}
	return d, nil
}

// load rebuilds the graph from the stored derivations and their states.
func (g *graph) load(tx *bolt.Tx) error {
	err := tx.Bucket(infosBucket).ForEach(func(k, v []byte) error {
		id, d, err := decodeInfo(v)
		if err != nil || len(k) != 8 {
			return fmt.Errorf("stored derivation %x: %v", k, err)
		}
		n := g.intern(id)
		g.setInfo(n, binary.BigEndian.Uint64(k), d)
		g.addInputs(n, d.GetInputDrvs())
		return nil
	})
	if err != nil {
		return err
	}
	return tx.Bucket(nodesBucket).ForEach(func(k, v []byte) error {
		d, err := decode(v)
		if err != nil {
			return fmt.Errorf("stored node %x: %w", k, err)
		}
		n := g.intern(d.id)
		nd := &g.nodes[n]
		nd.drv, nd.lastSeq, nd.pending, nd.doomBlocked = d.drv, d.lastSeq, d.pending, d.doomBlocked
		if d.doomed != "" {
			nd.doomed = g.intern(d.doomed) + 1
		}
		return nil
	})
}

// decodeInfo reads an infos value: id (binrow string), DrvDiscovered.
func decodeInfo(v []byte) (string, *eventsv1.DrvDiscovered, error) {
	r := binrow.NewReader(v)
	id := r.String()
	if r.Rest() == nil {
		return "", nil, binrow.ErrMalformed
	}
	d := &eventsv1.DrvDiscovered{}
	if err := proto.Unmarshal(r.Rest(), d); err != nil {
		return "", nil, err
	}
	return id, d, nil
}

func putInfo(tx *bolt.Tx, id string, key uint64, d *eventsv1.DrvDiscovered) error {
	v, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(binrow.AppendString(nil, id), d)
	if err != nil {
		return err
	}
	infos := tx.Bucket(infosBucket)
	infos.FillPercent = infosFill
	if err := infos.Put(seqKey(key), v); err != nil {
		return err
	}
	return tx.Bucket(idsBucket).Put([]byte(id), seqKey(key))
}

// State returns a derivation's state as the stored model knows it, for
// tests and the admin API.
func State(db *bolt.DB, id string) (buildstate.Drv, bool, error) {
	var out buildstate.Drv
	var found bool
	err := db.View(func(tx *bolt.Tx) error {
		key := tx.Bucket(idsBucket).Get([]byte(id))
		if key == nil {
			return nil
		}
		v := tx.Bucket(nodesBucket).Get(key)
		if v == nil {
			return nil
		}
		d, err := decode(v)
		if err != nil {
			return fmt.Errorf("derivation %s: %w", id, err)
		}
		out, found = d.drv, true
		return nil
	})
	return out, found, err
}
