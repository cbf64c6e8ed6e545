package nixbuild

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// jobLog is where one derivation's lines go: its log file (whole lines,
// up to the attempt's cap), OnLine (in MaxLineBytes pieces, up to the same
// cap) and the tail (the last lines, always kept, bounded in bytes).
type jobLog struct {
	file    *logFile
	onLine  func([]byte)
	maxLog  int64 // bytes of the log file (and of live lines); <= 0: no cap
	written int64
	capped  bool
	closed  bool // finished early: later lines are dropped

	tail      []string // ring of the last tailLines pieces
	tailNext  int
	tailLines int
	tailBytes int
}

func newJobLog(f *logFile, onLine func([]byte), o Options) *jobLog {
	return &jobLog{file: f, onLine: onLine, maxLog: o.MaxLogBytes, tailLines: o.TailLines, tailBytes: o.TailBytes,
		tail: make([]string, 0, o.TailLines)}
}

// line takes one whole line (without its newline).
func (l *jobLog) line(b []byte) {
	if l.closed {
		return
	}
	if !l.capped && l.maxLog > 0 && l.written+int64(len(b))+1 > l.maxLog {
		l.capped = true
		notice := []byte(fmt.Sprintf("[ekaci: this attempt's log reached its cap of %d bytes; the rest of its output is not kept, the build goes on]", l.maxLog))
		l.file.Write(notice)
		l.file.Write([]byte("\n"))
		l.emit(notice)
	}
	if !l.capped {
		l.written += int64(len(b)) + 1
		l.file.Write(b)
		l.file.Write([]byte("\n"))
	}
	// Pieces for the live stream and the tail: a line of any length
	// never becomes one message or one tail entry.
	if len(b) == 0 {
		l.piece(b)
		return
	}
	for len(b) > 0 {
		n := min(len(b), MaxLineBytes)
		l.piece(b[:n])
		b = b[n:]
	}
}

func (l *jobLog) piece(p []byte) {
	if !l.capped {
		l.emit(p)
	}
	s := string(p)
	if l.tailLines <= 0 {
		return
	}
	if len(l.tail) < l.tailLines {
		l.tail = append(l.tail, s)
	} else {
		l.tail[l.tailNext] = s
		l.tailNext = (l.tailNext + 1) % len(l.tail)
	}
}

func (l *jobLog) emit(p []byte) {
	if l.onLine != nil {
		l.onLine(bytes.Clone(p))
	}
}

// tailString is the last lines, valid UTF-8, at most tailBytes long (cut
// at the front, at a rune boundary: the last lines say why).
func (l *jobLog) tailString() string {
	lines := append(append([]string(nil), l.tail[l.tailNext:]...), l.tail[:l.tailNext]...)
	return TailBytes(strings.Join(lines, "\n"), l.tailBytes)
}

// TailBytes returns the end of s as valid UTF-8 of at most max bytes, cut
// at a rune boundary and marked with "…" when cut. max <= 0: no bound.
func TailBytes(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if max <= 0 || len(s) <= max {
		return s
	}
	const mark = "…"
	if max <= len(mark) {
		return ""
	}
	i := len(s) - (max - len(mark))
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return mark + s[i:]
}

// close finishes the log file.
func (l *jobLog) close() error {
	l.closed = true
	return l.file.Close()
}
