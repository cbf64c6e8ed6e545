package nixbuild

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestReadRecordsNeverStops feeds records far longer than maxRecord
// between short ones: every record comes out, in order, and a cut one
// keeps its head and its end.
func TestReadRecordsNeverStops(t *testing.T) {
	old := maxRecord
	maxRecord = 1 << 10
	t.Cleanup(func() { maxRecord = old })
	long := strings.Repeat("x", 100_000)
	in := "first\n" + long + "\nsecond\n" + long + "y" + "\nlast-without-newline"
	var got []record
	readRecords(strings.NewReader(in), func(r record) {
		r.data, r.tail = bytes.Clone(r.data), bytes.Clone(r.tail)
		got = append(got, r)
	})
	if len(got) != 5 {
		t.Fatalf("%d records, want 5", len(got))
	}
	for i, want := range map[int]string{0: "first", 2: "second", 4: "last-without-newline"} {
		if got[i].cut || string(got[i].data) != want {
			t.Errorf("record %d = %q (cut %v), want %q", i, got[i].data, got[i].cut, want)
		}
	}
	for _, i := range []int{1, 3} {
		r := got[i]
		if !r.cut || len(r.data) != maxRecord || r.size != len(long)+i/3 || len(r.tail) != recordTailKeep {
			t.Errorf("record %d: cut %v, head %d, size %d, tail %d", i, r.cut, len(r.data), r.size, len(r.tail))
		}
	}
	if !bytes.HasSuffix(got[3].tail, []byte("xy")) {
		t.Errorf("cut record's tail %q does not end the record", got[3].tail[len(got[3].tail)-10:])
	}
}

func TestCutResult(t *testing.T) {
	text := `a "quoted" \ line é ` + strings.Repeat("z", 5000) + `"],"id":1,"type":101}`
	rec, _ := json.Marshal(map[string]any{"action": "result", "fields": []string{text}, "id": 4242, "type": 101})
	whole := "@nix " + string(rec)
	head, tail := []byte(whole[:200]), []byte(whole[len(whole)-300:])
	id, typ, got, ok := cutResult(head, tail)
	if !ok || id != 4242 || typ != 101 {
		t.Fatalf("cutResult = %d %d %v, want 4242 101 true", id, typ, ok)
	}
	if !strings.HasPrefix(text, string(got)) || len(got) < 100 {
		t.Fatalf("text %q is not a prefix of the line", got)
	}
	// A tail whose closing quote is escaped is text, not the record's end.
	if _, _, _, ok := cutResult(head, []byte(`zzz\"],"id":7,"type":101}`)); ok {
		t.Fatal("an escaped quote was taken for the end of the text")
	}
	if _, _, _, ok := cutResult([]byte(`@nix {"action":"msg","level":0,"msg":"x`), tail); ok {
		t.Fatal("a cut message was taken for a result")
	}
}

func TestDecodeJSONStringPrefix(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:              "plain",
		`a\nb\tc\"d\\e\/f`:   "a\nb\tc\"d\\e/f",
		`\u00e9\ud83d\ude00`: "é😀",
		`cut in \u00`:        "cut in ",
		`cut in \`:           "cut in ",
		`ends" then more`:    "ends",
	} {
		if got := string(decodeJSONStringPrefix([]byte(in))); got != want {
			t.Errorf("decode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTailBytes(t *testing.T) {
	s := strings.Repeat("é", 100) // 200 bytes
	got := TailBytes(s, 51)
	if len(got) > 51 || !strings.HasPrefix(got, "…") || !strings.HasSuffix(got, "é") {
		t.Fatalf("TailBytes = %q (%d bytes)", got, len(got))
	}
	if got := TailBytes("ok\xff", 10); got != "ok\uFFFD" {
		t.Fatalf("TailBytes of invalid UTF-8 = %q", got)
	}
}
