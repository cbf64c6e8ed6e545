package recorder

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

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
	// SettledAt is the stream sequence of the fact that last settled it
	// (0 while unsettled): it decides when the row moves to the settled
	// bucket (drvTable.flush).
	SettledAt uint64
	// Key is the row's key in the live bucket: the stream sequence of the
	// first fact folded into it. That is its DrvDiscovered, since
	// buildstate accepts no other fact first; should that ever change, a
	// derivation's rows stays keyed by whichever fact came first, which a
	// rebuild from the log reproduces just the same. Derivations discovered
	// together are built together, so their rows share leaf pages.
	Key   uint64
	dirty bool
	// at is the bucket holding the row as of the last flush.
	at rowPlace
}

// rowPlace says which bucket holds a row.
type rowPlace uint8

const (
	nowhere   rowPlace = iota // not written yet
	inLive                    // drvsBucket, keyed by Key
	inSettled                 // settledBucket, keyed by ID
)

// drvTable holds the rows of the live bucket in memory — the derivations
// in flight, which the recorder folds events for (decoding a stored row
// per event cost more than the fold), and those settled lately — and
// writes back only the rows a batch changed.
//
// A settled row moves to the settled bucket, keyed by id, where lookup
// finds it again, and leaves memory, once the log has gone past the next
// multiple of compactEvery after the fact that settled it: memory grows
// with the work in flight (and compactEvery events' worth), not with every
// derivation ever seen. The moves are made in bulk because the settled
// bucket's keys are random: one row put alone rewrites a page, thousands
// put together share them. Where a row is stored is a function of its
// state and of the position folded, so a model rebuilt from the log is the
// same file as the one folded live. (A settled derivation still takes
// facts — a re-queue when a later jobset needs it, a downstream failure —
// rarely enough that reading its row then is cheap.)
type drvTable struct {
	rows  []drvRow
	index map[string]uint32 // id → position in rows
	free  []uint32          // positions in rows no row uses
	dirty []uint32
	buf   []byte // encoded keys and values of the batch being flushed
	// compactEvery is the period, in stream sequences, of the moves to
	// the settled bucket; boundary is the multiple of it applied last.
	compactEvery uint64
	boundary     uint64
}

// defaultCompactEvery is drvTable.compactEvery: at about four facts per
// derivation, some 16,000 settled rows wait in memory at most.
const defaultCompactEvery = 1 << 16

func newDrvTable() *drvTable {
	return &drvTable{index: map[string]uint32{}, compactEvery: defaultCompactEvery}
}

// inMemory is how many rows memory holds.
func (t *drvTable) inMemory() int { return len(t.index) }

// lookup returns a copy of id's row, from memory or, if stored, from the
// settled bucket (tx's).
func (t *drvTable) lookup(tx *bolt.Tx, id string, stored bool) (drvRow, bool, error) {
	if i, ok := t.index[id]; ok {
		return t.rows[i], true, nil
	}
	if !stored {
		return drvRow{}, false, nil
	}
	v := tx.Bucket(settledBucket).Get([]byte(id))
	if v == nil {
		return drvRow{}, false, nil
	}
	r, err := decodeRow(v)
	if err != nil {
		return drvRow{}, false, fmt.Errorf("decode %s/%s: %w", settledBucket, id, err)
	}
	r.at = inSettled
	return r, true, nil
}

// put stores r (by r.ID) and marks it for the next flush.
func (t *drvTable) put(r drvRow) {
	i, ok := t.index[r.ID]
	if !ok {
		if n := len(t.free); n > 0 {
			i, t.free = t.free[n-1], t.free[:n-1]
		} else {
			i = uint32(len(t.rows))
			t.rows = append(t.rows, drvRow{})
		}
		t.index[r.ID] = i
	} else {
		r.dirty = t.rows[i].dirty
	}
	t.rows[i] = r
	if !r.dirty {
		t.rows[i].dirty = true
		t.dirty = append(t.dirty, i)
	}
}

// load replaces the table's contents with the rows stored in the live
// bucket.
func (t *drvTable) load(live *bolt.Bucket) error {
	t.rows, t.dirty, t.free = t.rows[:0], t.dirty[:0], t.free[:0]
	clear(t.index)
	// The next flush applies the rule to every row again.
	t.boundary = 0
	return live.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("decode %s/%x: key is not a sequence", drvsBucket, k)
		}
		r, err := decodeRow(v)
		if err != nil {
			return fmt.Errorf("decode %s/%x: %w", drvsBucket, k, err)
		}
		r.Key, r.at = binary.BigEndian.Uint64(k), inLive
		if _, dup := t.index[r.ID]; dup {
			return fmt.Errorf("decode %s/%x: second row for %s", drvsBucket, k, r.ID)
		}
		t.index[r.ID] = uint32(len(t.rows))
		t.rows = append(t.rows, r)
		return nil
	})
}

// place is where r belongs once the log is folded up to a position whose
// boundary (a multiple of compactEvery) is boundary.
func place(r *drvRow, boundary uint64) rowPlace {
	if r.Drv.State.Settled() && r.SettledAt < boundary {
		return inSettled
	}
	return inLive
}

// flush writes the changed rows, folded up to position pos, each to the
// bucket it belongs in (place) and removed from the one that held it;
// rows stored in the settled bucket leave memory.
func (t *drvTable) flush(live, settled *bolt.Bucket, pos uint64) error {
	if b := pos - pos%t.compactEvery; b > t.boundary {
		// Past a boundary: every settled row of memory settled before it
		// moves now, together.
		t.boundary = b
		for i := range t.rows {
			r := &t.rows[i]
			if r.ID != "" && !r.dirty && place(r, b) != r.at {
				r.dirty = true
				t.dirty = append(t.dirty, uint32(i))
			}
		}
	}
	// In the order of the bucket each goes to: bbolt writes fewer pages
	// for sorted puts.
	slices.SortFunc(t.dirty, func(a, b uint32) int {
		ra, rb := &t.rows[a], &t.rows[b]
		pa, pb := place(ra, t.boundary), place(rb, t.boundary)
		switch {
		case pa != pb:
			return cmp.Compare(pa, pb)
		case pa == inSettled:
			return strings.Compare(ra.ID, rb.ID)
		}
		return cmp.Compare(ra.Key, rb.Key)
	})
	// bbolt keeps the keys and values put until the transaction ends: one
	// buffer holds them all (a slice taken before it grows stays valid).
	// Live rows arrive in key order and grow little once written: pack
	// pages fuller than bbolt's default half, which suits random inserts
	// (as the settled bucket's are).
	live.FillPercent = 0.9
	buf := t.buf[:0]
	for _, i := range t.dirty {
		r := &t.rows[i]
		r.dirty = false
		want := place(r, t.boundary)
		start := len(buf)
		if want == inSettled {
			buf = append(buf, r.ID...)
		} else {
			buf = binary.BigEndian.AppendUint64(buf, r.Key)
		}
		mid := len(buf)
		buf = appendRow(buf, r)
		key, val := buf[start:mid:mid], buf[mid:len(buf):len(buf)]
		if r.at != want {
			if err := t.remove(live, settled, r); err != nil {
				return err
			}
		}
		dst := live
		if want == inSettled {
			dst = settled
		}
		if err := dst.Put(key, val); err != nil {
			return err
		}
		r.at = want
		if want == inSettled {
			delete(t.index, r.ID)
			*r = drvRow{}
			t.free = append(t.free, i)
		}
	}
	t.dirty = t.dirty[:0]
	t.buf = buf
	return nil
}

// remove deletes r from the bucket that holds it.
func (t *drvTable) remove(live, settled *bolt.Bucket, r *drvRow) error {
	switch r.at {
	case inLive:
		return live.Delete(binary.BigEndian.AppendUint64(nil, r.Key))
	case inSettled:
		return settled.Delete([]byte(r.ID))
	}
	return nil
}

// appendRow appends r's stored form (its key is not part of it): ID, the
// buildstate.Drv (binrow.AppendDrv), Path, Detail, Cause, varint Millis,
// uvarint SettledAt, uvarint Key (the live key, kept when the row is
// stored by id).
// The same row always encodes to the same bytes.
func appendRow(b []byte, r *drvRow) []byte {
	b = binrow.AppendString(b, r.ID)
	b = binrow.AppendDrv(b, r.Drv)
	b = binrow.AppendString(b, r.Path)
	b = binrow.AppendString(b, r.Detail)
	b = binrow.AppendString(b, r.Cause)
	b = binary.AppendVarint(b, r.Millis)
	b = binary.AppendUvarint(b, r.SettledAt)
	return binary.AppendUvarint(b, r.Key)
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
	r.SettledAt = rd.Uvarint()
	r.Key = rd.Uvarint()
	if err := rd.Done(); err != nil {
		return drvRow{}, fmt.Errorf("%w: %w", errBadRow, err)
	}
	if r.ID == "" {
		return drvRow{}, fmt.Errorf("%w: no id", errBadRow)
	}
	return r, nil
}
