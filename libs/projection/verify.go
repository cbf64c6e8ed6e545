package projection

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// mark names the last event a model folded: its stream sequence, the time
// the log stored it and its message id (the event's id). The position
// alone is not enough: after a power loss the log can lose its last
// acknowledged events, which a model may have checkpointed past, and new
// events then take their sequence numbers. An event re-appended at the
// same sequence still differs in its stored time.
type mark struct {
	seq    uint64
	stored int64 // unix nanoseconds
	id     string
}

func (m mark) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(m.id)), m.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.stored))
	return append(b, m.id...)
}

func decodeMark(v []byte) (mark, bool) {
	if len(v) < 16 {
		return mark{}, false
	}
	return mark{seq: binary.BigEndian.Uint64(v), stored: int64(binary.BigEndian.Uint64(v[8:])), id: string(v[16:])}, true
}

func (m mark) String() string {
	return fmt.Sprintf("%d (id %q, stored %s)", m.seq, m.id, time.Unix(0, m.stored).UTC().Format(time.RFC3339Nano))
}

// markKey is where the model's mark is kept, next to its position and
// written in the same transaction.
func (r *Runner) markKey() []byte { return []byte(r.h.Name() + "@at") }

// verify checks, before the model folds anything, that the event at its
// position is the one it folded. When it is not — the log lost events the
// model had folded (a power loss on a server that does not fsync every
// write), or is another log altogether — the model would skip every event
// that takes those sequences from now on; so a Versioned model is reset
// and rebuilt from the log, as when its layout changes, and decides again
// from the history the log has. Any other model is refused (ErrAheadOfLog).
func (r *Runner) verify(ctx context.Context) error {
	r.mu.Lock()
	pos, m := r.pos, r.mark
	r.mu.Unlock()
	if pos == 0 {
		return nil
	}
	vh, versioned := r.h.(Versioned)
	var reason string
	err := r.retry(ctx, "check the read model against the log", func() error {
		var err error
		reason, err = r.differs(ctx, pos, m, versioned)
		return err
	})
	if err != nil || reason == "" {
		return err
	}
	if !versioned {
		return fmt.Errorf("read model %s at %d: %w: %s (delete its file to rebuild it from the log)", r.h.Name(), pos, ErrAheadOfLog, reason)
	}
	r.logger.Warn().Str("model", r.h.Name()).Uint64("was_at", pos).Str("reason", reason).
		Msg("read model is ahead of the event log or folded other events: rebuilding it from the log")
	err = r.db.Update(func(tx *bolt.Tx) error {
		if err := vh.Reset(tx); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		meta := tx.Bucket(metaBucket)
		if err := meta.Put([]byte(r.h.Name()), binary.BigEndian.AppendUint64(nil, 0)); err != nil {
			return err
		}
		if err := meta.Delete(r.markKey()); err != nil {
			return err
		}
		return r.h.Init(tx)
	})
	if err != nil {
		return fmt.Errorf("rebuild read model %s: %w", r.h.Name(), err)
	}
	r.mu.Lock()
	r.pos, r.mark = 0, mark{}
	r.mu.Unlock()
	return nil
}

// differs says how the log's event at pos differs from m ("" when it is
// the same event). A model that kept no mark (a file from before marks
// were kept) is rebuilt when it can be, else trusted when the log has an
// event there.
func (r *Runner) differs(ctx context.Context, pos uint64, m mark, versioned bool) (string, error) {
	if m.seq != pos && versioned {
		return fmt.Sprintf("the file records no identity for the event at %d (written by an older ekaci)", pos), nil
	}
	stream, err := r.log.JetStream().Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return "", fmt.Errorf("read model %s: stream: %w", r.h.Name(), err)
	}
	raw, err := stream.GetMsg(ctx, pos)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Sprintf("the log has no event %d (its last is %d)", pos, stream.CachedInfo().State.LastSeq), nil
	}
	if err != nil {
		return "", fmt.Errorf("read model %s: event %d: %w", r.h.Name(), pos, err)
	}
	if m.seq != pos {
		return "", nil // unversioned and unmarked: the event exists, which is all we can tell
	}
	got := mark{seq: pos, stored: raw.Time.UnixNano(), id: raw.Header.Get(jetstream.MsgIDHeader)}
	if got != m {
		return fmt.Sprintf("the log's event %s is not the one folded, %s", got, m), nil
	}
	return "", nil
}

// Retrying transient failures: from retryFirst, doubling up to retryMax.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 5 * time.Second
)

// retry runs op until it succeeds, fails for good (not
// eventlog.Transient) or ctx ends. While a transient failure lasts, the
// model reports itself not ready through the log's health hook ("read
// model <name>"), and ready again once op succeeds: a NATS disconnect or
// a leader moving must not stop the process, nor pass unseen.
func (r *Runner) retry(ctx context.Context, what string, op func() error) error {
	component := "read model " + r.h.Name()
	delay := retryFirst
	failures := 0
	for {
		err := op()
		if err == nil && failures > 0 {
			r.log.SetHealth(component, nil)
			r.logger.Info().Str("model", r.h.Name()).Int("failures", failures).Msg(what + ": recovered")
		}
		if err == nil || !eventlog.Transient(err) || ctx.Err() != nil {
			return err
		}
		failures++
		r.log.SetHealth(component, fmt.Errorf("%s: %w (retrying)", what, err))
		ev := r.logger.Debug()
		if failures == 1 {
			ev = r.logger.Warn()
		}
		ev.Err(err).Str("model", r.h.Name()).Int("failures", failures).Dur("retry_in", delay).Msg(what + ": will retry")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, retryMax)
	}
}
