package nixbuild

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxRecord bounds a record of Nix's log stream that is kept whole. A
// longer one (a builder printing a line of many megabytes, which Nix
// forwards as one record) is kept as its first maxRecord bytes and its last
// recordTailKeep bytes; the reader never stops reading, so Nix never
// blocks on a full pipe.
var maxRecord = 8 << 20

const recordTailKeep = 4096

// record is one line of Nix's stderr.
type record struct {
	data []byte // the whole record, or its head when cut
	tail []byte // its last bytes, when cut
	size int    // its full length
	cut  bool
}

// readRecords calls fn for each line of r until r ends or fails. fn must
// not keep the slices.
func readRecords(r io.Reader, fn func(rec record)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var rec record
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			complete := chunk[len(chunk)-1] == '\n'
			if complete {
				chunk = chunk[:len(chunk)-1]
			}
			rec.size += len(chunk)
			if !rec.cut {
				if room := maxRecord - len(rec.data); len(chunk) <= room {
					rec.data = append(rec.data, chunk...)
				} else {
					rec.data = append(rec.data, chunk[:room]...)
					rec.cut = true
					rec.tail = append(rec.tail[:0], chunk[room:]...)
				}
			} else {
				rec.tail = append(rec.tail, chunk...)
			}
			if len(rec.tail) > 2*recordTailKeep {
				rec.tail = append(rec.tail[:0], rec.tail[len(rec.tail)-recordTailKeep:]...)
			}
			if complete {
				emitRecord(&rec, fn)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil { // io.EOF, a closed pipe, a read deadline
			if rec.size > 0 {
				emitRecord(&rec, fn)
			}
			return
		}
	}
}

func emitRecord(rec *record, fn func(record)) {
	if len(rec.tail) > recordTailKeep {
		rec.tail = rec.tail[len(rec.tail)-recordTailKeep:]
	}
	fn(*rec)
	data := rec.data[:0]
	if cap(data) > 1<<20 {
		data = nil // do not hold megabytes for the next short line
	}
	*rec = record{data: data, tail: rec.tail[:0]}
}

// cutResult reads what can be read of a cut record: Nix writes a result
// as {"action":"result","fields":["<text>"],"id":N,"type":T} (nlohmann
// sorts keys), so the head holds the text's start and the tail its id and
// type. Inside the text every quote is escaped, so the `"],"id":` that
// ends the tail can only be Nix's own.
func cutResult(head, tail []byte) (id int64, typ int, text []byte, ok bool) {
	const prefix = `@nix {"action":"result","fields":["`
	rest, found := bytes.CutPrefix(head, []byte(prefix))
	if !found {
		return 0, 0, nil, false
	}
	// Tail: ...<text>"],"id":<digits>,"type":<digits>}
	t, found := bytes.CutSuffix(tail, []byte("}"))
	if !found {
		return 0, 0, nil, false
	}
	i := bytes.LastIndex(t, []byte(`,"type":`))
	if i < 0 {
		return 0, 0, nil, false
	}
	typ, err := strconv.Atoi(string(t[i+len(`,"type":`):]))
	if err != nil {
		return 0, 0, nil, false
	}
	t = t[:i]
	j := bytes.LastIndex(t, []byte(`"],"id":`))
	if j < 0 {
		return 0, 0, nil, false
	}
	id, err = strconv.ParseInt(string(t[j+len(`"],"id":`):]), 10, 64)
	if err != nil {
		return 0, 0, nil, false
	}
	// The closing quote must not itself be escaped.
	backslashes := 0
	for k := j - 1; k >= 0 && t[k] == '\\'; k-- {
		backslashes++
	}
	if backslashes%2 != 0 {
		return 0, 0, nil, false
	}
	return id, typ, decodeJSONStringPrefix(rest), true
}

// decodeJSONStringPrefix decodes the JSON string content b (without its
// opening quote) as far as it goes: up to its closing quote, or to the end
// of b, dropping an escape cut in the middle.
func decodeJSONStringPrefix(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			return out
		case c != '\\':
			out = append(out, c)
			continue
		}
		if i+1 >= len(b) {
			return out
		}
		i++
		switch b[i] {
		case '"', '\\', '/':
			out = append(out, b[i])
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
			if i+4 >= len(b) {
				return out
			}
			r, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 32)
			if err != nil {
				return out
			}
			i += 4
			ru := rune(r)
			if utf16.IsSurrogate(ru) {
				if i+6 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if r2, err := strconv.ParseUint(string(b[i+3:i+7]), 16, 32); err == nil {
						ru = utf16.DecodeRune(ru, rune(r2))
						i += 6
					}
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return out
		}
	}
	return out
}
