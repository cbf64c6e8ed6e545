// Package text makes free text fit in a fact: valid UTF-8 (protobuf string
// fields must be, or Marshal fails and the fact can never be appended) and
// bounded in bytes (a fact must fit the stream's max payload), cut at rune
// boundaries so the cut itself never produces invalid UTF-8.
package text

import (
	"strings"
	"unicode/utf8"
)

// Marker ends a text that Bound cut, so a reader knows it is not whole.
const Marker = "…"

// Valid returns s with every invalid UTF-8 sequence replaced by U+FFFD.
func Valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Bound returns s made valid UTF-8 and at most maxBytes bytes long. When it
// has to cut, it keeps the head, cuts at a rune boundary and ends the result
// with Marker (which counts toward maxBytes; when maxBytes is smaller than
// the marker the head is cut without it). maxBytes <= 0 gives "".
func Bound(s string, maxBytes int) string {
	s = Valid(s)
	if len(s) <= maxBytes {
		return s
	}
	if maxBytes <= 0 {
		return ""
	}
	if maxBytes < len(Marker) {
		return s[:runeStart(s, maxBytes)]
	}
	return s[:runeStart(s, maxBytes-len(Marker))] + Marker
}

// Tail is Bound keeping the end instead of the head (for log tails, where the
// last lines say why): the result starts with Marker when it was cut.
func Tail(s string, maxBytes int) string {
	s = Valid(s)
	if len(s) <= maxBytes {
		return s
	}
	if maxBytes <= 0 {
		return ""
	}
	if maxBytes < len(Marker) {
		return s[runeEnd(s, len(s)-maxBytes):]
	}
	return Marker + s[runeEnd(s, len(s)-maxBytes+len(Marker)):]
}

// runeStart returns the largest i <= n at which a rune of the valid string s
// starts (or len(s)), so s[:i] is valid.
func runeStart(s string, n int) int {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// runeEnd returns the smallest i >= n at which a rune of the valid string s
// starts (or len(s)), so s[i:] is valid.
func runeEnd(s string, n int) int {
	for n < len(s) && !utf8.RuneStart(s[n]) {
		n++
	}
	return n
}
