package recorder

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

var (
	// drvs holds <discovered sequence> → row (drvrows.go) of each
	// derivation in flight (unsettled); settled holds <drv id> → row of
	// each settled one.
	drvsBucket    = []byte("recorder_drvs")
	settledBucket = []byte("recorder_settled")
	jobsetsBucket = []byte("recorder_jobsets")
	// watch holds <drv id> 0 <jobset id> → a watchEntry (how many of the
	// jobset's attributes evaluate to that derivation, and whether it
	// awaits a needed-again re-queue), for each derivation of a jobset not
	// yet concluded: its entries go when it concludes, so a derivation's
	// transitions visit only the jobsets waiting for it.
	watchBucket   = []byte("recorder_watch")
	changesBucket = []byte("recorder_changes")
	// jobset_attrs holds <jobset id> 0 <4-byte part> <4-byte index> → one of its
	// attributes (a JobAttr, protobuf): written when the jobset is
	// evaluated, read when it concludes. The jobset row, rewritten each
	// time one of its derivations settles, stays small: a nixpkgs jobset
	// has ~100,000 attributes.
	jobsetAttrsBucket = []byte("recorder_jobset_attrs")
	// decided holds 'j' <jobset id> or 'c' <change id> → the conclusion
	// decided for it (an Event, protobuf) until the log holds it: should
	// another fact of the aggregate land before it, its guard fails, and it
	// is appended again behind that fact — the same conclusion, decided
	// once (see redecide).
	decidedBucket = []byte("recorder_decided")
	// checks holds <check id> → a checkRow once the check has ended.
	checksBucket = []byte("recorder_checks")
)

func attrKey(jobsetID string, part uint32, i int) []byte {
	k := make([]byte, 0, len(jobsetID)+9)
	k = append(append(k, jobsetID...), 0)
	k = binary.BigEndian.AppendUint32(k, part)
	return binary.BigEndian.AppendUint32(k, uint32(i))
}

// putAttrs stores one part of a jobset's attributes. The first copy of a
// part wins: a part listed again (a repeated evaluation) changes nothing,
// even if that evaluation came out otherwise.
func putAttrs(tx *bolt.Tx, jobsetID string, part uint32, attrs []*eventsv1.JobAttr) error {
	b := tx.Bucket(jobsetAttrsBucket)
	prefix := attrKey(jobsetID, part, 0)[:len(jobsetID)+5]
	if k, _ := b.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return nil
	}
	b.FillPercent = 1.0 // written once, in key order
	for i, a := range attrs {
		raw, err := marshalAttr(a)
		if err != nil {
			return err
		}
		if err := b.Put(attrKey(jobsetID, part, i), raw); err != nil {
			return err
		}
	}
	return nil
}

// eachAttr calls fn with every stored attribute of a jobset, in order.
func eachAttr(tx *bolt.Tx, jobsetID string, fn func(*eventsv1.JobAttr) error) error {
	prefix := append([]byte(jobsetID), 0)
	cur := tx.Bucket(jobsetAttrsBucket).Cursor()
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		a, err := unmarshalAttr(v)
		if err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

type jobsetRow struct {
	ChangeID  string `json:"change"`
	Job       string `json:"job"`
	Attrs     int    `json:"attrs"` // how many, in jobset_attrs
	Unsettled int    `json:"unsettled"`
	// Evaluated is set by the first evaluation outcome folded (evaluated
	// or eval_failed): any later one is a repeat and changes nothing.
	Evaluated bool `json:"evaluated"`
	// EvaluatedAt is the sequence of its jobset_evaluated: a derivation
	// that succeeded before it was already built (AttrResult.cached).
	EvaluatedAt uint64 `json:"evaluated_at,omitempty"`
	// Decided is set once a conclusion is decided (the decided bucket
	// holds it), Concluded once the log holds it.
	Decided    bool                `json:"decided"`
	Concluded  bool                `json:"concluded"`
	Conclusion eventsv1.Conclusion `json:"conclusion"`
	// Cancelled is set by a jobset_cancelled of this round: the jobset
	// concludes cancelled once evaluated, whatever is still unsettled.
	Cancelled bool `json:"cancelled,omitempty"`
	// Round counts the restarts folded (jobset_restarted): a conclusion
	// of round r > 0 has its own id (ConcludedAgainID).
	Round uint32 `json:"round,omitempty"`
	// Last is the stream sequence of the jobset's latest event seen. The
	// conclusion is appended expecting it, so a replay (a rebuilt read
	// model) that decides again is refused where the conclusion exists.
	Last uint64 `json:"last"`
}

type changeRow struct {
	Jobsets []string `json:"jobsets"`
	// Checks are the change's check ids (eventlog.CheckID), from its
	// config_read.
	Checks    []string                       `json:"checks,omitempty"`
	Concluded map[string]eventsv1.Conclusion `json:"concluded"`
	// Known is set by the first outcome of reading the change's
	// configuration folded (config read or invalid, checkout failed): any
	// later one is a repeat and changes nothing.
	Known    bool `json:"known"`
	Expected bool `json:"expected"` // the config was read and names jobs
	// Decided and Done are as jobsetRow's Decided and Concluded.
	Decided bool   `json:"decided"`
	Done    bool   `json:"done"`
	Last    uint64 `json:"last"` // as jobsetRow.Last
	// Cancelled is set by change_cancelled; Round counts the times one of
	// its jobsets was restarted after the change concluded (its next
	// conclusion's id is ConcludedAgainID).
	Cancelled bool   `json:"cancelled,omitempty"`
	Round     uint32 `json:"round,omitempty"`
}

func getJSON[T any](tx *bolt.Tx, bucket []byte, key string) (*T, error) {
	v := tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var t T
	if err := json.Unmarshal(v, &t); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return &t, nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

var buckets = [][]byte{drvsBucket, settledBucket, jobsetsBucket, watchBucket, changesBucket, jobsetAttrsBucket, decidedBucket, checksBucket}

func watchKey(drvID, jobsetID string) []byte {
	k := make([]byte, 0, len(drvID)+1+len(jobsetID))
	k = append(append(k, drvID...), 0)
	return append(k, jobsetID...)
}

// watchEntry is a watch bucket value: attrs of the jobset's attributes
// evaluate to the derivation; awaiting says the jobset counts it unsettled
// although it was settled when the jobset was evaluated, because ingress
// re-queues it (needed-again) for the jobset: the derivation's next fact
// decides (fold).
type watchEntry struct {
	attrs    uint32
	awaiting bool
}

func (w watchEntry) encode() []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 5), w.attrs)
	if w.awaiting {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeWatch(v []byte) (watchEntry, error) {
	if len(v) != 5 || v[4] > 1 {
		return watchEntry{}, fmt.Errorf("decode %s value %x: want 4 bytes of count and a flag", watchBucket, v)
	}
	return watchEntry{attrs: binary.BigEndian.Uint32(v), awaiting: v[4] == 1}, nil
}

func decidedKey(kind byte, id string) []byte { return append([]byte{kind}, id...) }

func marshalAttr(a *eventsv1.JobAttr) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(a)
}

func unmarshalAttr(raw []byte) (*eventsv1.JobAttr, error) {
	a := &eventsv1.JobAttr{}
	if err := proto.Unmarshal(raw, a); err != nil {
		return nil, fmt.Errorf("decode stored attribute: %w", err)
	}
	return a, nil
}

// checkRow is an ended check: whether it fails its change (it did not
// pass, and the base passed it or has no such check).
type checkRow struct {
	Fails bool `json:"fails"`
}
