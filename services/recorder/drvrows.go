package recorder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
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

// appendRow appends r's stored form (its key is not part of it):
//
//	uvarint len, ID
//	byte State; uvarint Attempt; byte flags (1 RetryUsed, 2 Cached);
//	varint Interruption; varint Events; uvarint len, Drv.Cause
//	uvarint len, Path; uvarint len, Detail; uvarint len, Cause
//	varint Millis
//
// The same row always encodes to the same bytes.
func appendRow(b []byte, r *drvRow) []byte {
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	b = str(b, r.ID)
	var flags byte
	if r.Drv.RetryUsed {
		flags |= 1
	}
	if r.Drv.Cached {
		flags |= 2
	}
	b = append(b, byte(r.Drv.State))
	b = binary.AppendUvarint(b, uint64(r.Drv.Attempt))
	b = append(b, flags)
	b = binary.AppendVarint(b, int64(r.Drv.Interruption))
	b = binary.AppendVarint(b, int64(r.Drv.Events))
	b = str(b, r.Drv.Cause)
	b = str(b, r.Path)
	b = str(b, r.Detail)
	b = str(b, r.Cause)
	return binary.AppendVarint(b, r.Millis)
}

var errBadRow = errors.New("malformed derivation row")

// rowReader reads appendRow's fields; the first error sticks.
type rowReader struct {
	b   []byte
	err error
}

func (r *rowReader) fail() { r.err, r.b = errBadRow, nil }

func (r *rowReader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *rowReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n]) // a copy: bbolt's bytes live as long as the transaction
	r.b = r.b[n:]
	return s
}

func decodeRow(v []byte) (drvRow, error) {
	rd := &rowReader{b: v}
	var r drvRow
	r.ID = rd.str()
	r.Drv.State = buildstate.State(rd.byte())
	attempt := rd.uvarint()
	flags := rd.byte()
	r.Drv.Interruption = eventsv1.InterruptKind(rd.varint())
	r.Drv.Events = int(rd.varint())
	r.Drv.Cause = rd.str()
	r.Path = rd.str()
	r.Detail = rd.str()
	r.Cause = rd.str()
	r.Millis = rd.varint()
	switch {
	case rd.err != nil:
		return drvRow{}, rd.err
	case len(rd.b) != 0:
		return drvRow{}, fmt.Errorf("%w: %d trailing bytes", errBadRow, len(rd.b))
	case attempt > 1<<32-1 || flags&^3 != 0 || r.ID == "":
		return drvRow{}, errBadRow
	}
	r.Drv.Attempt = uint32(attempt)
	r.Drv.RetryUsed, r.Drv.Cached = flags&1 != 0, flags&2 != 0
	return r, nil
}
