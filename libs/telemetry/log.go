package telemetry

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// TimeLayout is the timestamp layout of every log line: RFC 3339 with
// milliseconds, so lines from different processes sort and correlate.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// NewLogger returns a logger writing to w at level ("" means info) in
// format:
//
//	json     one JSON object per line, for log collectors
//	console  zerolog's human-readable lines (coloured only on a terminal)
//	auto     console when w is a terminal, json otherwise
//
// Every line carries a "time" field in TimeLayout, in UTC. The timestamp is
// added by a hook rather than zerolog.TimeFieldFormat so that building a
// logger changes no package globals.
func NewLogger(w io.Writer, level string, format string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		var err error
		lvl, err = zerolog.ParseLevel(strings.ToLower(level))
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("%w %q: want trace, debug, info, warn, error, fatal, panic or disabled", ErrBadLevel, level)
		}
	}
	tty := isTerminal(w)
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: TimeLayout, NoColor: !tty}
	case "auto", "":
		if tty {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: TimeLayout}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("%w %q: want json, console or auto", ErrBadFormat, format)
	}
	return zerolog.New(w).Level(lvl).Hook(timestampHook{}), nil
}

// timestampHook stamps each event as it is written (not when the logger was
// built, as zerolog's context timestamp would).
type timestampHook struct{}

func (timestampHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format(TimeLayout))
}

// isTerminal reports whether w is a file descriptor attached to a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
