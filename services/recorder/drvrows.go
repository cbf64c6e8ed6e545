package recorder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/projection/binrow"
)

// drvRow is the recorder's view of one derivation.
type drvRow struct {
	ID     string
	Drv    buildstate.Drv
	Path   string
	Detail string // log tail or interruption detail
	Cause  string // cause drv path
	Millis int64
	// Key is the row's key in the drvs bucket: the stream sequence of the
	// first fact folded into it. That is its DrvDiscovered, since
	// buildstate accepts no other fact first; should that ever change, a
	// derivation's rows stays keyed by whichever fact came first, which a
	// rebuild from the log reproduces just the same. Derivations discovered
	// together are built together, so their rows share leaf pages.
	Key   uint64
	dirty bool
}

// drvTable holds every derivation row in memory — the recorder folds
// every derivation event, and decoding a stored row per event cost more
// than the fold — and writes back only the rows a batch changed.
type drvTable struct {
	rows  []drvRow
	index map[string]uint32 // id → position in rows
	dirty []uint32
	buf   []byte // encoded keys and values of the batch being flushed
}

func newDrvTable() *drvTable { return &drvTable{index: map[string]uint32{}} }

// lookup returns a copy of id's row.
func (t *drvTable) lookup(id string) (drvRow, bool) {
	i, ok := t.index[id]
	if !ok {
		return drvRow{}, false
	}
	return t.rows[i], true
}

// put stores r (by r.ID) and marks it for the next flush.
func (t *drvTable) put(r drvRow) {
	i, ok := t.index[r.ID]
	if !ok {
		i = uint32(len(t.rows))
		t.rows = append(t.rows, drvRow{})
		t.index[r.ID] = i
	}
	r.dirty = t.rows[i].dirty
	t.rows[i] = r
	if !r.dirty {
		t.rows[i].dirty = true
		t.dirty = append(t.dirty, i)
	}
}

// load replaces the table's contents with the rows stored in b.
func (t *drvTable) load(b *bolt.Bucket) error {
	t.rows, t.dirty = t.rows[:0], t.dirty[:0]
	clear(t.index)
	return b.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("decode %s/%x: key is not a sequence", drvsBucket, k)
		}
		r, err := decodeRow(v)
		if err != nil {
			return fmt.Errorf("decode %s/%x: %w", drvsBucket, k, err)
		}
		r.Key = binary.BigEndian.Uint64(k)
		if _, dup := t.index[r.ID]; dup {
			return fmt.Errorf("decode %s/%x: second row for %s", drvsBucket, k, r.ID)
		}
		t.index[r.ID] = uint32(len(t.rows))
		t.rows = append(t.rows, r)
		return nil
	})
}

// flush writes the changed rows to b, in key order.
func (t *drvTable) flush(b *bolt.Bucket) error {
	// Rows are appended as they are first folded, and loaded in key order,
	// so position order is key order.
	slices.Sort(t.dirty)
	// bbolt keeps the keys and values put until the transaction ends: one
	// buffer holds them all (a slice taken before it grows stays valid).
	// Rows arrive in key order and grow little once written: pack pages
	// fuller than bbolt's default half, which suits random inserts.
	b.FillPercent = 0.9
	buf := t.buf[:0]
	for _, i := range t.dirty {
		r := &t.rows[i]
		r.dirty = false
		start := len(buf)
		buf = binary.BigEndian.AppendUint64(buf, r.Key)
		mid := len(buf)
		buf = appendRow(buf, r)
		if err := b.Put(buf[start:mid:mid], buf[mid:len(buf):len(buf)]); err != nil {
			return err
		}
	}
	t.dirty = t.dirty[:0]
	t.buf = buf
	return nil
}

// appendRow appends r's stored form (its key is not part of it): ID, the
// buildstate.Drv (binrow.AppendDrv), Path, Detail, Cause, varint Millis.
// The same row always encodes to the same bytes.
func appendRow(b []byte, r *drvRow) []byte {
	b = binrow.AppendString(b, r.ID)
	b = binrow.AppendDrv(b, r.Drv)
	b = binrow.AppendString(b, r.Path)
	b = binrow.AppendString(b, r.Detail)
	b = binrow.AppendString(b, r.Cause)
	return binary.AppendVarint(b, r.Millis)
}

var errBadRow = errors.New("malformed derivation row")

func decodeRow(v []byte) (drvRow, error) {
	rd := binrow.NewReader(v)
	var r drvRow
	r.ID = rd.String()
	r.Drv = rd.Drv()
	r.Path = rd.String()
	r.Detail = rd.String()
	r.Cause = rd.String()
	r.Millis = rd.Varint()
	if err := rd.Done(); err != nil {
		return drvRow{}, fmt.Errorf("%w: %w", errBadRow, err)
	}
	if r.ID == "" {
		return drvRow{}, fmt.Errorf("%w: no id", errBadRow)
	}
	return r, nil
}
