package pbjson

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Encoder appends JSON for generated MarshalProtoJSON methods.
type Encoder struct {
	buf []byte
	bad bool // something only protojson can judge: Marshal falls back
}

// Fail gives the message to protojson.
func (e *Encoder) Fail() { e.bad = true }

// Open starts an object.
func (e *Encoder) Open() { e.buf = append(e.buf, '{') }

// Close ends an object.
func (e *Encoder) Close() { e.buf = append(e.buf, '}') }

// OpenArray starts an array.
func (e *Encoder) OpenArray() { e.buf = append(e.buf, '[') }

// CloseArray ends an array.
func (e *Encoder) CloseArray() { e.buf = append(e.buf, ']') }

// comma separates a value from the one before it in its object or array.
func (e *Encoder) comma() {
	if c := e.buf[len(e.buf)-1]; c != '{' && c != '[' {
		e.buf = append(e.buf, ',')
	}
}

// Name starts a field; quoted is its name as a JSON string with the colon
// (`"drv_path":`), written by the generator.
func (e *Encoder) Name(quoted string) {
	e.comma()
	e.buf = append(e.buf, quoted...)
}

// Key starts a map entry.
func (e *Encoder) Key(k string) {
	e.comma()
	e.String(k)
	e.buf = append(e.buf, ':')
}

// Elem starts an array element.
func (e *Encoder) Elem() { e.comma() }

// Bool writes a boolean.
func (e *Encoder) Bool(v bool) { e.buf = strconv.AppendBool(e.buf, v) }

// Int32 writes a number.
func (e *Encoder) Int32(v int32) { e.buf = strconv.AppendInt(e.buf, int64(v), 10) }

// Uint32 writes a number.
func (e *Encoder) Uint32(v uint32) { e.buf = strconv.AppendUint(e.buf, uint64(v), 10) }

// Int64 writes a 64-bit integer as protojson does: a quoted decimal.
func (e *Encoder) Int64(v int64) {
	e.buf = append(e.buf, '"')
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.buf = append(e.buf, '"')
}

// Uint64 writes a 64-bit integer as protojson does: a quoted decimal.
func (e *Encoder) Uint64(v uint64) {
	e.buf = append(e.buf, '"')
	e.buf = strconv.AppendUint(e.buf, v, 10)
	e.buf = append(e.buf, '"')
}

// Enum writes a value's name, or its number when it has none.
func (e *Encoder) Enum(v int32, names map[int32]string) {
	if n, ok := names[v]; ok {
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, n...)
		e.buf = append(e.buf, '"')
		return
	}
	e.Int32(v)
}

// String writes s escaped as protojson escapes it; invalid UTF-8 is
// protojson's to refuse.
func (e *Encoder) String(s string) {
	b := append(e.buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				e.bad = true
				return
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	e.buf = append(b, '"')
}

// The range protojson accepts: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// Timestamp writes RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits.
func (e *Encoder) Timestamp(t *timestamppb.Timestamp) {
	secs, nanos := t.GetSeconds(), t.GetNanos()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999999999 {
		e.bad = true
		return
	}
	u := time.Unix(secs, 0).UTC()
	year, month, day := u.Date()
	hour, minute, sec := u.Clock()
	b := append(e.buf, '"')
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	if nanos != 0 {
		digits := 9
		switch {
		case nanos%1000000 == 0:
			nanos, digits = nanos/1000000, 3
		case nanos%1000 == 0:
			nanos, digits = nanos/1000, 6
		}
		b = append(b, '.')
		b = appendDigits(b, int(nanos), digits)
	}
	e.buf = append(b, 'Z', '"')
}

// appendDigits appends v (≥ 0) zero-padded to width digits.
func appendDigits(b []byte, v, width int) []byte {
	var d [9]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}

// SortedKeys is a map's keys in the order protojson writes them.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
