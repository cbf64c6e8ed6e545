package nixbuild

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// logFile is the zstd-compressed full log of one build. Its zero value
// (no path) discards everything, so callers that want no file pay nothing.
type logFile struct {
	f   *os.File
	enc *zstd.Encoder
	err error // first write error; later writes are skipped
}

func createLog(path string) (*logFile, error) {
	if path == "" {
		return &logFile{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir for %s: %w", path, err)
	}
	// Truncate: a retried attempt with the same path replaces the old log
	// rather than appending a second zstd frame to it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create log %s: %w", path, err)
	}
	// One encoder goroutine per build is plenty: build output is slow
	// compared to zstd, and builders run many builds at once.
	enc, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("zstd writer for %s: %w", path, err)
	}
	return &logFile{f: f, enc: enc}, nil
}

func (l *logFile) Write(p []byte) {
	if l.enc == nil || l.err != nil {
		return
	}
	if _, err := l.enc.Write(p); err != nil {
		l.err = fmt.Errorf("write log %s: %w", l.f.Name(), err)
	}
}

// Close finishes the zstd frame and closes the file; it returns the first
// error seen over the log's life.
func (l *logFile) Close() error {
	if l.enc == nil {
		return nil
	}
	err := l.enc.Close()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if l.err == nil && err != nil {
		l.err = fmt.Errorf("close log %s: %w", l.f.Name(), err)
	}
	l.enc = nil
	return l.err
}

// discard removes a log that belongs to a build that never started.
func (l *logFile) discard() {
	if l.enc == nil {
		return
	}
	name := l.f.Name()
	l.Close()
	os.Remove(name)
}

// OpenLog opens a log kept by Build and returns its decompressed content.
// A log cut short (the builder machine died mid-build, so the zstd frame
// was never finished) makes Read fail with an error at some point.
func OpenLog(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("zstd reader for %s: %w", path, err)
	}
	return &logReader{dec: dec, f: f}, nil
}

type logReader struct {
	dec *zstd.Decoder
	f   *os.File
}

func (r *logReader) Read(p []byte) (int, error) { return r.dec.Read(p) }

func (r *logReader) Close() error {
	r.dec.Close()
	return r.f.Close()
}
