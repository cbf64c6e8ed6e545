// Package binrow is the compact binary form of read-model rows: strings
// with a uvarint length, varints, single bytes and a buildstate.Drv, each
// written in a fixed order, so that the same row always encodes to the
// same bytes (a rebuilt read model equals the live one byte for byte).
package binrow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ekaci/ekaci/libs/buildstate"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// ErrMalformed means a stored row does not decode.
var ErrMalformed = errors.New("malformed row")

// AppendString appends s with its length.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendDrv appends a derivation's folded state: byte State, uvarint
// Attempt, byte flags (1 RetryUsed, 2 Cached), varint Interruption, varint
// Events, string Cause.
func AppendDrv(b []byte, d buildstate.Drv) []byte {
	var flags byte
	if d.RetryUsed {
		flags |= 1
	}
	if d.Cached {
		flags |= 2
	}
	b = append(b, byte(d.State))
	b = binary.AppendUvarint(b, uint64(d.Attempt))
	b = append(b, flags)
	b = binary.AppendVarint(b, int64(d.Interruption))
	b = binary.AppendVarint(b, int64(d.Events))
	return AppendString(b, d.Cause)
}

// Reader reads a row field by field; the first error sticks, and every
// later read returns a zero value.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

func (r *Reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	r.b = nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// String reads a string, copied: bbolt's bytes live only as long as the
// transaction.
func (r *Reader) String() string {
	n := r.Uvarint()
	if n > uint64(len(r.b)) {
		r.fail("truncated string")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Drv reads what AppendDrv wrote.
func (r *Reader) Drv() buildstate.Drv {
	var d buildstate.Drv
	d.State = buildstate.State(r.Byte())
	attempt := r.Uvarint()
	flags := r.Byte()
	d.Interruption = eventsv1.InterruptKind(r.Varint())
	d.Events = int(r.Varint())
	d.Cause = r.String()
	if r.err != nil {
		return buildstate.Drv{}
	}
	if attempt > math.MaxUint32 || flags&^3 != 0 || int(d.State) >= len(buildstate.AllStates) {
		r.fail("derivation state out of range")
		return buildstate.Drv{}
	}
	d.Attempt = uint32(attempt)
	d.RetryUsed, d.Cached = flags&1 != 0, flags&2 != 0
	return d
}

// Rest returns the bytes not read yet (nil after an error), for a row
// whose tail is in another encoding.
func (r *Reader) Rest() []byte { return r.b }

// Done reports the first error, or trailing bytes after the last field.
func (r *Reader) Done() error {
	if r.err == nil && len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return r.err
}
