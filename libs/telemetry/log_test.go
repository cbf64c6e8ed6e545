package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var msTimestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestNewLoggerJSON(t *testing.T) {
	tests := []struct {
		name, level, format string
		wantLines           int
	}{
		{name: "json info drops debug", level: "info", format: "json", wantLines: 2},
		{name: "default level is info", level: "", format: "json", wantLines: 2},
		{name: "debug keeps debug", level: "debug", format: "json", wantLines: 3},
		{name: "upper-case level", level: "WARN", format: "json", wantLines: 1},
		{name: "auto on a buffer is json", level: "info", format: "auto", wantLines: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.level, tt.format)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug().Msg("d")
			log.Info().Str("k", "v").Msg("i")
			log.Warn().Msg("w")
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if len(lines) != tt.wantLines {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), tt.wantLines, buf.String())
			}
			for _, l := range lines {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatalf("line is not JSON: %q: %v", l, err)
				}
				ts, _ := rec["time"].(string)
				if !msTimestamp.MatchString(ts) {
					t.Errorf("time %q is not RFC 3339 UTC with milliseconds", ts)
				}
				if parsed, err := time.Parse(time.RFC3339, ts); err != nil || time.Since(parsed) > time.Minute || time.Since(parsed) < -time.Minute {
					t.Errorf("time %q is not now (err %v)", ts, err)
				}
				if rec["level"] == nil || rec["message"] == nil {
					t.Errorf("line lacks level or message: %q", l)
				}
			}
		})
	}
}

func TestNewLoggerConsole(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("k", "v").Msg("hello")
	out := buf.String()
	if strings.HasPrefix(out, "{") || !strings.Contains(out, "hello") || !strings.Contains(out, "k=v") {
		t.Fatalf("not console output: %q", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour escapes written to a non-terminal: %q", out)
	}
	// The console line starts with the timestamp in TimeLayout (local zone).
	ts, _, _ := strings.Cut(out, " ")
	if _, err := time.Parse(TimeLayout, ts); err != nil {
		t.Errorf("console timestamp %q not in TimeLayout: %v", ts, err)
	}
}

// TestNewLoggerAutoTerminal writes through a real pseudo-terminal: auto
// must pick the console format there.
func TestNewLoggerAutoTerminal(t *testing.T) {
	master, slave := openPTY(t)
	log, err := NewLogger(slave, "info", "auto")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("on a tty")

	got := make(chan string, 1)
	go func() {
		var out []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(out, []byte("\n")) {
			n, err := master.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- string(out)
	}()
	select {
	case out := <-got:
		if !strings.Contains(out, "on a tty") || strings.Contains(out, `"message"`) {
			t.Fatalf("auto on a terminal wrote %q, want console format", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing read from the pty within 10s")
	}
}

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

func TestNewLoggerErrors(t *testing.T) {
	tests := []struct {
		name, level, format string
		want                error
		mention             string
	}{
		{name: "bad level", level: "loud", format: "json", want: ErrBadLevel, mention: `"loud"`},
		{name: "bad format", level: "info", format: "xml", want: ErrBadFormat, mention: `"xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewLogger(&bytes.Buffer{}, tt.level, tt.format)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("err = %v, want %v mentioning %s", err, tt.want, tt.mention)
			}
		})
	}
}
