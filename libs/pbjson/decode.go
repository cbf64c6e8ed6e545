package pbjson

import (
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Decoder reads JSON for generated UnmarshalProtoJSON methods. Every method
// does nothing once it has failed; Unmarshal then asks protojson.
type Decoder struct {
	data   []byte
	pos    int
	failed bool
	depth  int
}

// Fail gives the input to protojson.
func (d *Decoder) Fail() { d.failed = true }

// Failed reports whether the fast path gave up.
func (d *Decoder) Failed() bool { return d.failed }

func (d *Decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after whitespace, 0 at the end.
func (d *Decoder) peek() byte {
	d.ws()
	if d.failed || d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

func (d *Decoder) expect(c byte) bool {
	if d.peek() != c {
		d.failed = true
		return false
	}
	d.pos++
	return true
}

func (d *Decoder) finish() bool {
	d.ws()
	return !d.failed && d.pos == len(d.data)
}

// Object starts an object; First and More walk its fields.
func (d *Decoder) Object() bool { return d.expect('{') }

// First reports whether the object just opened has a field.
func (d *Decoder) First() bool { return d.first('}') }

// More reports whether another field follows the one just read.
func (d *Decoder) More() bool { return d.more('}') }

// first reports whether the object or array just opened, ending at end,
// has a member.
func (d *Decoder) first(end byte) bool {
	if d.peek() == end {
		d.pos++
		return false
	}
	return !d.failed
}

// more reports whether another member follows, before end.
func (d *Decoder) more(end byte) bool {
	switch d.peek() {
	case ',':
		d.pos++
		return true
	case end:
		d.pos++
		return false
	}
	d.failed = true
	return false
}

// Name reads a field name and its colon. The bytes are the input's; a
// name with escapes is protojson's to read.
func (d *Decoder) Name() []byte {
	if !d.expect('"') {
		return nil
	}
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c == '"' {
			name := d.data[start:d.pos]
			d.pos++
			if !d.expect(':') {
				return nil
			}
			return name
		}
		if c == '\\' || c < ' ' || c >= utf8.RuneSelf {
			break
		}
		d.pos++
	}
	d.failed = true
	return nil
}

// Seen marks field i of the object read; a field given twice is
// protojson's to refuse.
func (d *Decoder) Seen(seen *uint64, i int) {
	if *seen&(1<<i) != 0 {
		d.failed = true
	}
	*seen |= 1 << i
}

// Array starts an array; ArrayFirst and ArrayMore walk its elements.
func (d *Decoder) Array() bool { return d.expect('[') }

// ArrayFirst reports whether the array just opened has an element.
func (d *Decoder) ArrayFirst() bool { return d.first(']') }

// ArrayMore reports whether another element follows.
func (d *Decoder) ArrayMore() bool { return d.more(']') }

// Key reads a map key and its colon.
func (d *Decoder) Key() string {
	k := d.String()
	d.expect(':')
	return k
}

// String reads a string.
func (d *Decoder) String() string {
	raw, esc := d.stringBytes()
	if d.failed {
		return ""
	}
	if !esc {
		return string(raw)
	}
	return d.unescape(raw)
}

// stringBytes scans a string and returns what is between its quotes and
// whether it holds escapes. Invalid UTF-8 and raw control characters fail.
func (d *Decoder) stringBytes() ([]byte, bool) {
	if !d.expect('"') {
		return nil, false
	}
	start, esc := d.pos, false
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			return raw, esc
		case c == '\\':
			esc = true
			d.pos += 2
		case c < ' ':
			d.failed = true
			return nil, false
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && n == 1 {
				d.failed = true
				return nil, false
			}
			d.pos += n
		default:
			d.pos++
		}
	}
	d.failed = true
	return nil, false
}

func (d *Decoder) unescape(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			d.failed = true
			return ""
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				d.failed = true
				return ""
			}
			var r rune
			for _, h := range raw[i+1 : i+5] {
				switch {
				case h >= '0' && h <= '9':
					r = r<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					r = r<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					r = r<<4 | rune(h-'A'+10)
				default:
					d.failed = true
					return ""
				}
			}
			if r >= 0xd800 && r <= 0xdfff { // surrogates: protojson's to pair
				d.failed = true
				return ""
			}
			out = utf8.AppendRune(out, r)
			i += 4
		default:
			d.failed = true
			return ""
		}
	}
	return string(out)
}

// Bool reads true or false.
func (d *Decoder) Bool() bool {
	switch d.peek() {
	case 't':
		if d.literal("true") {
			return true
		}
	case 'f':
		if d.literal("false") {
			return false
		}
	}
	d.failed = true
	return false
}

func (d *Decoder) literal(s string) bool {
	if len(d.data)-d.pos >= len(s) && string(d.data[d.pos:d.pos+len(s)]) == s {
		d.pos += len(s)
		return true
	}
	d.failed = true
	return false
}

// digits reads an optionally negative decimal integer with no fraction or
// exponent and returns its magnitude; anything else fails.
func (d *Decoder) digits(signed bool, limit uint64) (uint64, bool) {
	neg := false
	if signed && d.pos < len(d.data) && d.data[d.pos] == '-' {
		neg = true
		d.pos++
	}
	start := d.pos
	var v uint64
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c < '0' || c > '9' {
			break
		}
		if v > (limit-uint64(c-'0'))/10 {
			d.failed = true
			return 0, false
		}
		v = v*10 + uint64(c-'0')
		d.pos++
	}
	n := d.pos - start
	if n == 0 || (n > 1 && d.data[start] == '0') {
		d.failed = true
		return 0, false
	}
	if d.pos < len(d.data) {
		switch d.data[d.pos] {
		case '.', 'e', 'E':
			d.failed = true // integral in protojson's eyes maybe, but not ours to judge
			return 0, false
		}
	}
	return v, neg
}

// Uint32 reads a number.
func (d *Decoder) Uint32() uint32 {
	d.ws()
	v, _ := d.digits(false, 1<<32-1)
	return uint32(v)
}

// Int32 reads a number.
func (d *Decoder) Int32() int32 {
	d.ws()
	v, neg := d.digits(true, 1<<31)
	if neg {
		return int32(-int64(v))
	}
	if v > 1<<31-1 {
		d.failed = true
	}
	return int32(v)
}

// Uint64 reads a quoted decimal, as protojson writes 64-bit integers, or a
// bare one.
func (d *Decoder) Uint64() uint64 {
	quoted := d.peek() == '"'
	if quoted {
		d.pos++
	}
	v, _ := d.digits(false, 1<<64-1)
	if quoted && !d.closeQuote() {
		return 0
	}
	return v
}

// closeQuote ends a quoted number; no spaces inside the quotes, which
// protojson refuses.
func (d *Decoder) closeQuote() bool {
	if d.pos >= len(d.data) || d.data[d.pos] != '"' {
		d.failed = true
		return false
	}
	d.pos++
	return true
}

// Int64 reads a quoted decimal, as protojson writes 64-bit integers, or a
// bare one.
func (d *Decoder) Int64() int64 {
	quoted := d.peek() == '"'
	if quoted {
		d.pos++
	}
	v, neg := d.digits(true, 1<<63)
	if quoted && !d.closeQuote() {
		return 0
	}
	if neg {
		return int64(-v) // -(1<<63) wraps to itself: MinInt64
	}
	if v > 1<<63-1 {
		d.failed = true
	}
	return int64(v)
}

// Enum reads a value by name, or by number as protojson writes a value
// the schema does not name; an unknown name is protojson's.
func (d *Decoder) Enum(values map[string]int32) int32 {
	if c := d.peek(); c == '-' || (c >= '0' && c <= '9') {
		return d.Int32()
	}
	raw, esc := d.stringBytes()
	if d.failed || esc {
		d.failed = true
		return 0
	}
	v, ok := values[string(raw)]
	if !ok {
		d.failed = true
	}
	return v
}

// Timestamp reads the RFC 3339 form protojson writes: UTC ("Z"), with 0 to
// 9 fractional digits. Offsets and the rest of RFC 3339 are protojson's.
func (d *Decoder) Timestamp() *timestamppb.Timestamp {
	raw, esc := d.stringBytes()
	if d.failed || esc || len(raw) < 20 || raw[len(raw)-1] != 'Z' {
		d.failed = true
		return nil
	}
	num := func(s []byte) int {
		v := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				d.failed = true
				return 0
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	if raw[4] != '-' || raw[7] != '-' || raw[10] != 'T' || raw[13] != ':' || raw[16] != ':' {
		d.failed = true
		return nil
	}
	year, month, day := num(raw[0:4]), num(raw[5:7]), num(raw[8:10])
	hour, minute, sec := num(raw[11:13]), num(raw[14:16]), num(raw[17:19])
	nanos := 0
	if frac := raw[19 : len(raw)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			d.failed = true
			return nil
		}
		nanos = num(frac[1:])
		for range 10 - len(frac) {
			nanos *= 10
		}
	}
	if d.failed || year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		d.failed = true
		return nil
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day { // 31 April: time.Parse refuses what Date normalizes
		d.failed = true
		return nil
	}
	return &timestamppb.Timestamp{Seconds: t.Unix(), Nanos: int32(nanos)}
}

// maxSkipDepth bounds the nesting of an unknown field's value.
const maxSkipDepth = 100

// Skip reads any JSON value, as an unknown field's is read and dropped.
func (d *Decoder) Skip() {
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > maxSkipDepth {
		d.failed = true
		return
	}
	switch c := d.peek(); {
	case c == '{':
		d.pos++
		for more := d.First(); more; more = d.More() {
			d.Key()
			d.Skip()
		}
	case c == '[':
		d.pos++
		for more := d.ArrayFirst(); more; more = d.ArrayMore() {
			d.Skip()
		}
	case c == '"':
		_ = d.String() // unescaped only to check the escapes
	case c == 't':
		d.literal("true")
	case c == 'f':
		d.literal("false")
	case c == 'n':
		d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		d.number()
	default:
		d.failed = true
	}
}

// number reads a JSON number.
func (d *Decoder) number() {
	i := d.pos
	if i < len(d.data) && d.data[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9' {
			i++
			n++
		}
		return n
	}
	start := i
	n := digits()
	if n == 0 || (n > 1 && d.data[start] == '0') {
		d.failed = true
		return
	}
	if i < len(d.data) && d.data[i] == '.' {
		i++
		if digits() == 0 {
			d.failed = true
			return
		}
	}
	if i < len(d.data) && (d.data[i] == 'e' || d.data[i] == 'E') {
		i++
		if i < len(d.data) && (d.data[i] == '+' || d.data[i] == '-') {
			i++
		}
		if digits() == 0 {
			d.failed = true
			return
		}
	}
	d.pos = i
}

// Message reads a nested message into m, which is empty, and returns it.
func Message[M Unmarshaler](d *Decoder, m M) M {
	m.UnmarshalProtoJSON(d)
	return m
}
