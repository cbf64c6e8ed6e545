package text

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short ascii kept", "hello", 10, "hello"},
		{"exact fit kept", "hello", 5, "hello"},
		{"ascii cut with marker", "hello world", 8, "hello…"},
		{"zero gives empty", "hello", 0, ""},
		{"negative gives empty", "hello", -1, ""},
		{"cut never splits a rune", "ééééé", 8, "éé…"},  // 2+2+3 = 7 <= 8; a third é would need 9
		{"cut before a 4-byte rune", "a😀bc", 6, "a…"},   // 1+4+3 > 6: the emoji does not fit with the marker
		{"below marker size no marker", "éé", 2, "é"},   // 1 byte short of the marker
		{"below marker size rune dropped", "éé", 1, ""}, // half an é is never kept
		{"invalid bytes replaced", "a\xffb", 10, "a\uFFFDb"},
		{"invalid bytes replaced before cut", "a\xffbcdefgh", 7, "a\uFFFD…"},
		{"truncated rune at end replaced", "ab\xc3", 10, "ab\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Bound(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("Bound(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Bound(%q, %d) = %q is not valid UTF-8", tc.in, tc.max, got)
			}
			if tc.max >= 0 && len(got) > tc.max {
				t.Errorf("Bound(%q, %d) is %d bytes", tc.in, tc.max, len(got))
			}
		})
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short kept", "hello", 10, "hello"},
		{"ascii cut keeps the end", "hello world", 8, "…world"},
		{"cut never splits a rune", "ééééé", 8, "…éé"},
		{"below marker size", "éé", 2, "é"},
		{"zero gives empty", "hello", 0, ""},
		{"invalid bytes replaced", "x\xffy", 10, "x\uFFFDy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Tail(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("Tail(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if !utf8.ValidString(got) || len(got) > max(tc.max, 0) {
				t.Errorf("Tail(%q, %d) = %q: invalid or over the bound", tc.in, tc.max, got)
			}
		})
	}
}

// Every cut of a long mixed text at every bound is valid and within it.
func TestBoundEveryLength(t *testing.T) {
	s := strings.Repeat("aé😀\xff字", 20)
	for n := 0; n <= len(s)+4; n++ {
		for _, f := range []func(string, int) string{Bound, Tail} {
			got := f(s, n)
			if !utf8.ValidString(got) || len(got) > n {
				t.Fatalf("bound %d: %q (%d bytes) invalid or over", n, got, len(got))
			}
		}
	}
}
