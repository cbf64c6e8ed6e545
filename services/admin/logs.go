package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// Logs serves build logs: the builder's zstd file of a finished attempt
// (<log dir>/<drv id>/<attempt>.log.zst), and the live lines of a running
// one from the EKACI_LOGS stream, until the attempt ends.
type Logs struct {
	Dir   string // the builders' log dir (<data-dir>/logs in the all-in-one)
	JS    jetstream.JetStream
	Reads *Reads
	// Poll is how often a follow checks whether its attempt ended while
	// no line comes (default 500 ms).
	Poll time.Duration
}

// chunk bounds what one write carries.
const chunk = 32 << 10

// ErrNoLog: the attempt exists but no log of it is kept (not started yet,
// or deleted by retention and gone from the stream).
var ErrNoLog = errors.New("no log kept for this attempt")

// Tail writes the log of a derivation's attempt (0: the latest) to w, in
// chunks: what is stored, then, with follow and while the attempt runs,
// live lines until it ends or ctx does.
func (l *Logs) Tail(ctx context.Context, idOrPath string, attempt uint32, follow bool, w func([]byte) error) error {
	id, n, running, err := l.Reads.attempt(idOrPath, attempt)
	if err != nil {
		return err
	}
	if !running {
		err := l.file(id, n, w)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// Not kept on this machine (a remote builder, or retention): the
		// stream may still hold its lines.
		sent, err := l.lines(ctx, id, n, false, w)
		if err == nil && sent == 0 {
			return fmt.Errorf("derivation %s attempt %d: %w", id, n, ErrNoLog)
		}
		return err
	}
	_, err = l.lines(ctx, id, n, follow, w)
	return err
}

// path is where the builder keeps an attempt's log: id is a derivation id
// the model knows (no separator), n a number, so it stays in Dir.
func (l *Logs) path(id string, n uint32) (string, error) {
	if !eventlog.ValidToken(id) || filepath.Base(id) != id || id == ".." {
		return "", fmt.Errorf("derivation id %q: %w", id, ErrBadArgument)
	}
	p := filepath.Join(l.Dir, id, strconv.FormatUint(uint64(n), 10)+".log.zst")
	if rel, err := filepath.Rel(l.Dir, p); err != nil || rel != filepath.Join(id, filepath.Base(p)) {
		return "", fmt.Errorf("log path %s: %w", p, ErrBadArgument)
	}
	return p, nil
}

// file decompresses a finished attempt's log to w, never reading it whole.
func (l *Logs) file(id string, n uint32, w func([]byte) error) error {
	if l.Dir == "" {
		return fs.ErrNotExist
	}
	p, err := l.path(id, n)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("read log %s: %w", p, err)
	}
	defer dec.Close()
	buf := make([]byte, chunk)
	for {
		k, err := dec.Read(buf)
		if k > 0 {
			if werr := w(buf[:k]); werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			// A log cut short (its builder died mid-build): what was
			// written is sent, and the reader told.
			return w([]byte(fmt.Sprintf("\n[ekaci: the log ends here: %v]\n", err)))
		}
	}
}

// lines sends the lines the stream holds for the attempt, and with follow
// the live ones until the attempt is no longer running; it returns how
// many it sent.
func (l *Logs) lines(ctx context.Context, id string, n uint32, follow bool, w func([]byte) error) (int, error) {
	if l.JS == nil {
		return 0, nil
	}
	cons, err := l.JS.OrderedConsumer(ctx, eventlog.LogsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventlog.LogSubject(id, n)}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return 0, fmt.Errorf("read live log of %s attempt %d: %w", id, n, err)
	}
	poll := l.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	sent := 0
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(poll))
		if err != nil {
			return sent, fmt.Errorf("read live log of %s attempt %d: %w", id, n, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			line := append(m.Data(), '\n')
			if err := w(line); err != nil {
				return sent, err
			}
			sent++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return sent, fmt.Errorf("read live log of %s attempt %d: %w", id, n, err)
		}
		if got > 0 {
			continue
		}
		// Nothing waiting: done, unless following an attempt that runs.
		if !follow {
			return sent, nil
		}
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
		_, _, running, err := l.Reads.attempt(id, n)
		if err != nil {
			return sent, err
		}
		if !running {
			follow = false // one more round for lines published before it ended
		}
	}
}
