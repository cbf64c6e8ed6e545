package checker

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/ekaci/ekaci/libs/eventlog/text"
)

// output is where a run's output goes: a zstd log file (as a build's),
// live lines on the log stream, and the tail kept for the fact.
type output struct {
	f       *os.File
	enc     *zstd.Encoder
	err     error
	conn    *nats.Conn
	subject string
	line    []byte
	tail    []byte
	maxTail int
}

// maxLine bounds one live log line: the file keeps the whole line.
const maxLine = 16 << 10

func newOutput(path string, conn *nats.Conn, subject string, maxTail int) (*output, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("check log dir: %w", err)
	}
	// Truncate: an attempt run again replaces its log.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("check log: %w", err)
	}
	enc, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("check log %s: %w", path, err)
	}
	return &output{f: f, enc: enc, conn: conn, subject: subject, maxTail: maxTail}, nil
}

// Write never fails: a log that cannot be written must not stop the
// check (the error is returned by Close).
func (o *output) Write(p []byte) (int, error) {
	if o.err == nil {
		if _, err := o.enc.Write(p); err != nil {
			o.err = err
		}
	}
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*o.maxTail {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-o.maxTail:]...)
	}
	if o.conn != nil {
		rest := p
		for len(rest) > 0 {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				if len(o.line) < maxLine {
					o.line = append(o.line, rest[:min(len(rest), maxLine-len(o.line))]...)
				}
				break
			}
			if len(o.line) < maxLine {
				o.line = append(o.line, rest[:min(i, maxLine-len(o.line))]...)
			}
			_ = o.conn.Publish(o.subject, o.line)
			o.line = o.line[:0]
			rest = rest[i+1:]
		}
	}
	return len(p), nil
}

// Tail is the end of the output, valid UTF-8, at most maxTail bytes.
func (o *output) Tail() string { return text.Tail(string(o.tail), o.maxTail) }

// Close finishes the log file.
func (o *output) Close() error {
	if o.conn != nil && len(o.line) > 0 {
		_ = o.conn.Publish(o.subject, o.line)
	}
	err := o.enc.Close()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if o.err != nil {
		return o.err
	}
	return err
}
