package eventlog

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestWarnUsage: the events budget warns well before it fills (at 80 %),
// again at each further 5 %, at error from 95 %, and says when it is back
// under; samples in between say nothing.
func TestWarnUsage(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	warned := map[string]int{}
	for _, tc := range []struct {
		name  string
		bytes uint64
		want  string // level logged, "" for nothing
	}{
		{"79 %: quiet", 79, ""},
		{"80 %: warns", 80, "warn"},
		{"84 %: same step, quiet", 84, ""},
		{"85 %: warns again", 85, "warn"},
		{"96 %: error", 96, "error"},
		{"70 %: back under", 70, "info"},
		{"75 %: quiet", 75, ""},
	} {
		buf.Reset()
		warnUsage(log, Usage{Stream: EventsStream, Bytes: tc.bytes, MaxBytes: 100}, warned)
		got := ""
		if buf.Len() > 0 {
			for _, lvl := range []string{"info", "warn", "error"} {
				if strings.Contains(buf.String(), `"level":"`+lvl+`"`) {
					got = lvl
				}
			}
		}
		if got != tc.want {
			t.Errorf("%s: logged %q (%s), want %q", tc.name, got, strings.TrimSpace(buf.String()), tc.want)
		}
	}
}
