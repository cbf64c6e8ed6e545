package ingress

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

var (
	// nodes: id → the derivation's state (small JSON, rewritten as it
	// changes).
	nodesBucket = []byte("ingress_nodes")
	// infos: id → its DrvDiscovered (protobuf, written once). Its input
	// list is the durable copy of the graph's edges: the dependents index
	// is kept in memory and rebuilt from here when the model opens, so
	// discovering a derivation writes no per-edge keys.
	infosBucket = []byte("ingress_infos")
)

// node is one derivation's state in the graph model.
type node struct {
	Drv     buildstate.Drv `json:"d"`
	LastSeq uint64         `json:"q"` // stream sequence of its last fact
	Pending int            `json:"p"` // dependencies not yet succeeded
	// Doomed names the failed (or interrupted, when DoomBlocked)
	// derivation whose propagation has marked this one, before its own
	// TransitiveFailure (or Blocked) event is back from the log: a
	// dependent discovered in between inherits the verdict from here.
	Doomed      string `json:"x,omitempty"`
	DoomBlocked bool   `json:"xb,omitempty"`
}

// graphIndex is the in-memory dependents index: derivation ids interned to
// small numbers, and for each the numbers of its direct dependents.
type graphIndex struct {
	num        map[string]int32
	ids        []string
	dependents [][]int32
}

func newIndex() *graphIndex { return &graphIndex{num: map[string]int32{}} }

func (x *graphIndex) intern(id string) int32 {
	if n, ok := x.num[id]; ok {
		return n
	}
	n := int32(len(x.ids))
	x.num[id] = n
	x.ids = append(x.ids, id)
	x.dependents = append(x.dependents, nil)
	return n
}

// addInputs records that id depends on each of inputs.
func (x *graphIndex) addInputs(id string, inputs []string) {
	n := x.intern(id)
	for _, in := range inputs {
		i := x.intern(in)
		x.dependents[i] = append(x.dependents[i], n)
	}
}

func (x *graphIndex) dependentsOf(id string) []string {
	n, ok := x.num[id]
	if !ok {
		return nil
	}
	out := make([]string, len(x.dependents[n]))
	for i, d := range x.dependents[n] {
		out[i] = x.ids[d]
	}
	return out
}

// load rebuilds the index from the stored derivations.
func (x *graphIndex) load(tx *bolt.Tx) error {
	return tx.Bucket(infosBucket).ForEach(func(k, v []byte) error {
		d := &eventsv1.DrvDiscovered{}
		if err := proto.Unmarshal(v, d); err != nil {
			return fmt.Errorf("decode stored derivation %s: %w", k, err)
		}
		x.addInputs(string(k), d.GetInputDrvs())
		return nil
	})
}

// batch caches the nodes one batch of events reads and writes, so a node
// touched by many events of the batch (a dependent whose inputs all
// succeed at once) is decoded and encoded once. It is written back before
// the batch's transaction commits.
type batch struct {
	nodes map[string]*node
	dirty map[string]bool
}

func newBatch() *batch { return &batch{nodes: map[string]*node{}, dirty: map[string]bool{}} }

func (b *batch) get(tx *bolt.Tx, id string) (*node, error) {
	if n, ok := b.nodes[id]; ok {
		return n, nil
	}
	v := tx.Bucket(nodesBucket).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	n := &node{}
	if err := json.Unmarshal(v, n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", id, err)
	}
	b.nodes[id] = n
	return n, nil
}

func (b *batch) put(id string, n *node) {
	b.nodes[id] = n
	b.dirty[id] = true
}

func (b *batch) flush(tx *bolt.Tx) error {
	bk := tx.Bucket(nodesBucket)
	for id := range b.dirty {
		v, err := json.Marshal(b.nodes[id])
		if err != nil {
			return err
		}
		if err := bk.Put([]byte(id), v); err != nil {
			return err
		}
	}
	clear(b.nodes)
	clear(b.dirty)
	return nil
}

func getInfo(tx *bolt.Tx, id string) (*eventsv1.DrvDiscovered, error) {
	v := tx.Bucket(infosBucket).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	d := &eventsv1.DrvDiscovered{}
	if err := proto.Unmarshal(v, d); err != nil {
		return nil, fmt.Errorf("decode stored derivation %s: %w", id, err)
	}
	return d, nil
}

func putInfo(tx *bolt.Tx, id string, d *eventsv1.DrvDiscovered) error {
	v, err := proto.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(infosBucket).Put([]byte(id), v)
}

// State returns a derivation's state as the model knows it, for tests and
// the admin API.
func State(db *bolt.DB, id string) (buildstate.Drv, bool, error) {
	var n *node
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = newBatch().get(tx, id)
		return err
	})
	if err != nil || n == nil {
		return buildstate.Drv{}, false, err
	}
	return n.Drv, true, nil
}
