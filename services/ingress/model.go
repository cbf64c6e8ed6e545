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
	nodesBucket = []byte("ingress_nodes")
	// dependents holds one key per edge, <dependency id><dependent id>, so
	// a prefix scan lists a derivation's dependents without rewriting a
	// growing list on every discovery.
	dependentsBucket = []byte("ingress_dependents")
)

// node is one derivation in the graph model.
type node struct {
	Drv     buildstate.Drv `json:"d"`
	LastSeq uint64         `json:"q"` // stream sequence of its last fact
	Pending int            `json:"p"` // dependencies not yet succeeded
	Info    []byte         `json:"i"` // the DrvDiscovered payload, protobuf
}

func (n *node) info() (*eventsv1.DrvDiscovered, error) {
	d := &eventsv1.DrvDiscovered{}
	if err := proto.Unmarshal(n.Info, d); err != nil {
		return nil, fmt.Errorf("decode stored derivation: %w", err)
	}
	return d, nil
}

func getNode(tx *bolt.Tx, id string) (*node, error) {
	v := tx.Bucket(nodesBucket).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	n := &node{}
	if err := json.Unmarshal(v, n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", id, err)
	}
	return n, nil
}

func putNode(tx *bolt.Tx, id string, n *node) error {
	v, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return tx.Bucket(nodesBucket).Put([]byte(id), v)
}

func addEdge(tx *bolt.Tx, dep, dependent string) error {
	return tx.Bucket(dependentsBucket).Put([]byte(dep+dependent), nil)
}

func dependents(tx *bolt.Tx, id string) []string {
	var out []string
	c := tx.Bucket(dependentsBucket).Cursor()
	prefix := []byte(id)
	for k, _ := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == id; k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

// State returns a derivation's state as the model knows it, for tests and
// the admin API.
func State(db *bolt.DB, id string) (buildstate.Drv, bool, error) {
	var n *node
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = getNode(tx, id)
		return err
	})
	if err != nil || n == nil {
		return buildstate.Drv{}, false, err
	}
	return n.Drv, true, nil
}
