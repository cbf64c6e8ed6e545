package ingress

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection/binrow"
)

// layoutVersion is the stored layout of ingress.db (projection.Versioned).
// 0 was JSON node rows keyed by derivation id; 4 had no live, blocked or
// jobsets buckets; 5 had no failed and jobset_state buckets, and its
// jobsets values were empty; 6 is the layout below.
const layoutVersion = 6

var (
	// infos: discovered sequence (8 bytes, big-endian) → the derivation's
	// id and its DrvDiscovered (protobuf); written once, in log order, so
	// the bucket only ever appends. The input lists are the durable copy
	// of the graph's edges.
	infosBucket = []byte("ingress_infos")
	// ids: drv id → its discovered sequence, for lookups by id.
	idsBucket = []byte("ingress_ids")
	// nodes: discovered sequence → the derivation's state (binary,
	// rewritten as it changes). Keyed by the sequence, not the id, so that
	// derivations discovered together — which are also built together —
	// share leaf pages: a commit rewrites fewer pages than one random page
	// per changed derivation.
	nodesBucket = []byte("ingress_nodes")
	// live: discovered sequence → nothing, for every derivation not
	// settled: what the model loads when it opens.
	liveBucket = []byte("ingress_live")
	// blocked: the cause's discovered sequence, then the blocked one's →
	// nothing, for every Blocked derivation: when the interrupted cause is
	// queued again, the derivations it blocked follow it, whether or not
	// they are in memory.
	blockedBucket = []byte("ingress_blocked")
	// jobsets: jobset id, 0, part ("e" for jobset_evaluated) → the ids of
	// the part's derivations, newline-separated, for every list of
	// attributes folded: a repeated one (a replay after the duplicate
	// window) decides nothing again, and a cancel or a restart of the
	// jobset knows what it needs.
	jobsetsBucket = []byte("ingress_jobsets")
	// failed: the failed cause's discovered sequence, then the transitive
	// failure's → nothing, for every TransitiveFailure: when someone
	// retries the cause, the derivations it failed follow it.
	failedBucket = []byte("ingress_failed")
	// jobset_state: jobset id → 'l' (live: listed, not concluded) or 'c'
	// (cancelled, not concluded): what a cancel keeps building for the
	// other jobsets, and how a cancelled jobset's later parts are told.
	jobsetStateBucket = []byte("ingress_jobset_state")
)

var buckets = [][]byte{nodesBucket, infosBucket, idsBucket, liveBucket, blockedBucket, jobsetsBucket, failedBucket, jobsetStateBucket}

// Fill factors: infos only appends; node values keep their size as they
// change, so their pages need little room to grow.
const (
	infosFill = 1.0
	nodesFill = 0.9
)

// node is one derivation in memory. Every derivation that is not settled
// is in memory, with its inputs; a settled one stays only while something
// in memory needs it (an unsettled dependent, a verdict naming it on its
// way) and is read back from bbolt when needed again.
type node struct {
	id  string
	key uint64 // stream sequence of its DrvDiscovered; 0 before it is discovered

	drv     buildstate.Drv
	lastSeq uint64 // stream sequence of its last fact
	pending int32  // dependencies not yet succeeded (kept while it is not settled)
	// doomed is 1 + the number of the failed (or interrupted, when
	// doomBlocked) derivation whose propagation marked this one, before
	// its own TransitiveFailure (or Blocked) event is back from the log:
	// a dependent discovered in between inherits the verdict from here.
	doomed      int32
	doomBlocked bool
	// asked: a requeue of it, guarded on lastSeq, is on its way to the
	// log; any fact on it clears the flag.
	asked bool

	// Not stored: how memory keeps track of it.
	dirty      bool
	candidate  bool   // listed in graph.candidates
	liveStored bool   // its key is in the live bucket
	registered bool   // counted in its inputs' live and listed as their dependent
	reg        uint32 // the registration its dependents-list entries carry
	live       int32  // registered dependents
	pins       int32  // nodes whose doomed names this one
	inputs     []int32

	// What routing needs, from its DrvDiscovered.
	path     string
	system   string
	fod      bool
	prefer   bool
	features []string
}

func (n *node) discovered() bool { return n.drv.State != buildstate.None }

// dep is an entry of a dependents list: valid while the node is still
// registered under the same registration.
type dep struct {
	n   int32
	reg uint32
}

// graph holds the derivations in memory and, for each, the unsettled
// derivations that depend on it directly. Slots of nodes that leave memory
// are reused; list entries of a node that settled or left are dropped
// when the list is next walked.
type graph struct {
	tx         *bolt.Tx // the transaction of the fold in progress
	num        map[string]int32
	nodes      []node
	dependents [][]dep
	free       []int32
	changed    []int32 // nodes dirtied since the last flush
	candidates []int32 // nodes that may leave memory at the next flush
	regSeq     uint32
	systems    map[string]string

	// walks mark visited nodes with a generation instead of a fresh set.
	seen    []uint32
	seenGen uint32
}

func newGraph() *graph { return &graph{num: map[string]int32{}, systems: map[string]string{}} }

// intern gives id a slot in memory, as a derivation not yet discovered.
func (g *graph) intern(id string) int32 {
	id = strings.Clone(id) // ids are often slices of a subject or a bbolt page
	var n int32
	if len(g.free) > 0 {
		n = g.free[len(g.free)-1]
		g.free = g.free[:len(g.free)-1]
		g.nodes[n] = node{id: id}
	} else {
		n = int32(len(g.nodes))
		g.nodes = append(g.nodes, node{id: id})
		g.dependents = append(g.dependents, nil)
	}
	g.num[id] = n
	g.consider(n)
	return n
}

// lookup returns the slot of an id in memory.
func (g *graph) lookup(id string) (int32, bool) {
	n, ok := g.num[id]
	return n, ok
}

// node returns id's slot, reading a derivation that left memory back from
// bbolt, or giving a new one a slot.
func (g *graph) node(id string) (int32, error) {
	if n, ok := g.num[id]; ok {
		return n, nil
	}
	if k := g.tx.Bucket(idsBucket).Get([]byte(id)); k != nil {
		n, _, err := g.load(k)
		return n, err
	}
	return g.intern(id), nil
}

// load reads the derivation stored under key into memory and returns its
// slot and input ids. Its dependents list starts empty: the unsettled
// derivations that depend on it are in memory already, so none does.
func (g *graph) load(key []byte) (int32, []string, error) {
	v := g.tx.Bucket(nodesBucket).Get(key)
	info := g.tx.Bucket(infosBucket).Get(key)
	if v == nil || info == nil || len(key) != 8 {
		return 0, nil, fmt.Errorf("stored derivation %x: missing", key)
	}
	d, err := decode(v)
	if err != nil {
		return 0, nil, fmt.Errorf("stored node %x: %w", key, err)
	}
	id, di, err := decodeInfo(info)
	if err != nil {
		return 0, nil, fmt.Errorf("stored derivation %x: %w", key, err)
	}
	if id != d.id {
		return 0, nil, fmt.Errorf("stored derivation %x: node %s, info %s", key, d.id, id)
	}
	if n, ok := g.num[d.id]; ok {
		return n, di.GetInputDrvs(), nil // read already, through another's verdict
	}
	n := g.intern(d.id)
	g.setInfo(n, binary.BigEndian.Uint64(key), di)
	nd := &g.nodes[n]
	nd.drv, nd.lastSeq, nd.pending, nd.doomBlocked, nd.asked = d.drv, d.lastSeq, d.pending, d.doomBlocked, d.asked
	if d.doomed != "" {
		c, err := g.node(d.doomed)
		if err != nil {
			return 0, nil, err
		}
		g.setDoomed(n, c, d.doomBlocked)
	}
	return n, di.GetInputDrvs(), nil
}

// inputIDs reads n's input ids from its stored DrvDiscovered.
func (g *graph) inputIDs(n int32) ([]string, error) {
	v := g.tx.Bucket(infosBucket).Get(seqKey(g.nodes[n].key))
	if v == nil {
		return nil, fmt.Errorf("derivation %s: no stored inputs", g.nodes[n].id)
	}
	_, d, err := decodeInfo(v)
	if err != nil {
		return nil, fmt.Errorf("derivation %s: %w", g.nodes[n].id, err)
	}
	return d.GetInputDrvs(), nil
}

// setInputs resolves n's inputs (reading those that left memory) and
// registers n with them.
func (g *graph) setInputs(n int32, ids []string) error {
	inputs := make([]int32, len(ids))
	for i, id := range ids {
		in, err := g.node(id)
		if err != nil {
			return err
		}
		inputs[i] = in
	}
	g.nodes[n].inputs = inputs
	g.register(n)
	return nil
}

// register lists n as a dependent of each of its inputs, which stay in
// memory while it is registered.
func (g *graph) register(n int32) {
	g.regSeq++
	nd := &g.nodes[n]
	nd.registered, nd.reg = true, g.regSeq
	for _, in := range nd.inputs {
		list := g.dependents[in]
		if len(list) == cap(list) && len(list) >= 32 {
			// Drop stale entries before growing, so that a list is never
			// more than twice its valid entries.
			list = g.compact(in)
		}
		g.dependents[in] = append(list, dep{n, g.regSeq})
		g.nodes[in].live++
	}
}

// unregister is register undone, when n settles.
func (g *graph) unregister(n int32) {
	nd := &g.nodes[n]
	if !nd.registered {
		return
	}
	for _, in := range nd.inputs {
		g.nodes[in].live--
		g.consider(in)
	}
	nd.registered, nd.inputs = false, nil
}

// compact drops n's dependents-list entries that are no longer valid.
func (g *graph) compact(n int32) []dep {
	list := g.dependents[n]
	k := 0
	for _, e := range list {
		if d := &g.nodes[e.n]; d.registered && d.reg == e.reg {
			list[k] = e
			k++
		}
	}
	clear(list[k:])
	g.dependents[n] = list[:k]
	return list[:k]
}

// eachDependent calls fn for each registered dependent of n.
func (g *graph) eachDependent(n int32, fn func(d int32)) {
	for _, e := range g.compact(n) {
		fn(e.n)
	}
}

func (g *graph) setDoomed(n, cause int32, blocked bool) {
	g.clearDoomed(n)
	g.nodes[n].doomed, g.nodes[n].doomBlocked = cause+1, blocked
	g.nodes[cause].pins++
}

func (g *graph) clearDoomed(n int32) {
	nd := &g.nodes[n]
	if nd.doomed == 0 {
		return
	}
	c := nd.doomed - 1
	nd.doomed, nd.doomBlocked = 0, false
	g.nodes[c].pins--
	g.consider(c)
}

// consider lists n as a candidate to leave memory at the next flush.
func (g *graph) consider(n int32) {
	if nd := &g.nodes[n]; !nd.candidate {
		nd.candidate = true
		g.candidates = append(g.candidates, n)
	}
}

func (g *graph) touch(n int32) {
	if !g.nodes[n].dirty {
		g.nodes[n].dirty = true
		g.changed = append(g.changed, n)
	}
}

// evictable: nothing in memory needs n, and its state is stored.
func (g *graph) evictable(n int32) bool {
	nd := &g.nodes[n]
	settled := nd.drv.State.Settled() || nd.drv.State == buildstate.None
	return nd.id != "" && settled && !nd.registered && nd.live == 0 && nd.pins == 0 && !nd.dirty
}

func (g *graph) evict(n int32) {
	delete(g.num, g.nodes[n].id)
	g.nodes[n] = node{}
	g.dependents[n] = nil
	g.free = append(g.free, n)
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

// newGen starts a walk: mark(n) is then true the first time only.
func (g *graph) newGen() {
	g.seenGen++
	if g.seenGen == 0 { // wrapped: forget every old mark
		clear(g.seen)
		g.seenGen = 1
	}
}

func (g *graph) mark(n int32) bool {
	if int(n) >= len(g.seen) {
		g.seen = append(g.seen, make([]uint32, len(g.nodes)-len(g.seen))...)
	}
	if g.seen[n] == g.seenGen {
		return false
	}
	g.seen[n] = g.seenGen
	return true
}

// walk visits the transitive unsettled dependents of root breadth-first,
// each once, descending only through those visit accepts.
func (g *graph) walk(root int32, visit func(n int32) bool) {
	g.newGen()
	g.mark(root)
	queue := []int32{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		g.eachDependent(cur, func(dep int32) {
			if g.mark(dep) && g.nodes[dep].discovered() && visit(dep) {
				queue = append(queue, dep)
			}
		})
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }

// flush writes the nodes changed since the last flush, then lets go of
// those nothing in memory needs any more.
func (g *graph) flush(tx *bolt.Tx) error {
	bk := tx.Bucket(nodesBucket)
	bk.FillPercent = nodesFill
	live := tx.Bucket(liveBucket)
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
		k := seqKey(nd.key)
		// bbolt keeps the value slice until commit: copy it.
		if err := bk.Put(k, append([]byte(nil), buf...)); err != nil {
			return err
		}
		switch want := !nd.drv.State.Settled(); {
		case want && !nd.liveStored:
			if err := live.Put(k, nil); err != nil {
				return err
			}
		case !want && nd.liveStored:
			if err := live.Delete(k); err != nil {
				return err
			}
		}
		nd.liveStored = !nd.drv.State.Settled()
		g.consider(n)
	}
	g.changed = g.changed[:0]
	for _, n := range g.candidates {
		g.nodes[n].candidate = false
		if g.evictable(n) {
			g.evict(n)
		}
	}
	g.candidates = g.candidates[:0]
	return nil
}

// encode is a node's stored state: id, its buildstate.Drv (binrow), byte
// flags (1 doomBlocked, 2 asked), uvarint lastSeq, uvarint pending,
// doomed's id.
func (g *graph) encode(b []byte, nd *node) []byte {
	b = binrow.AppendString(b, nd.id)
	b = binrow.AppendDrv(b, nd.drv)
	var flags byte
	if nd.doomBlocked {
		flags |= 1
	}
	if nd.asked {
		flags |= 2
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
	asked       bool
}

func decode(v []byte) (decoded, error) {
	r := binrow.NewReader(v)
	var d decoded
	d.id = r.String()
	d.drv = r.Drv()
	flags := r.Byte()
	d.doomBlocked, d.asked = flags&1 != 0, flags&2 != 0
	d.lastSeq = r.Uvarint()
	d.pending = int32(r.Uvarint())
	d.doomed = r.String()
	if err := r.Done(); err != nil {
		return d, fmt.Errorf("decode node: %w", err)
	}
	return d, nil
}

// open loads what is not settled, and what that needs: its inputs, and
// the causes of verdicts on their way. Settled derivations stay in bbolt
// until a fold needs one.
func (g *graph) open(tx *bolt.Tx) error {
	g.tx = tx
	type liveNode struct {
		n      int32
		inputs []string
	}
	var all []liveNode
	err := tx.Bucket(liveBucket).ForEach(func(k, _ []byte) error {
		n, inputs, err := g.load(k)
		if err != nil {
			return err
		}
		g.nodes[n].liveStored = true
		all = append(all, liveNode{n, inputs})
		return nil
	})
	if err != nil {
		return err
	}
	// In discovered order, as the live fold registered them: the
	// dependents lists come back in the same order.
	for _, l := range all {
		if err := g.setInputs(l.n, l.inputs); err != nil {
			return err
		}
	}
	return nil
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

// blockedKey is the blocked bucket's key for dependent d blocked by cause c.
func blockedKey(c, d uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), c), d)
}

// State returns a derivation's state as the stored model knows it (the
// tests read it; the admin API has a read model of its own).
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
