package projection

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// Handler is one read model.
type Handler interface {
	// Name identifies the read model; it keys the stored position.
	Name() string
	// Filters are the event subjects the model folds (nil: all).
	Filters() []string
	// Init creates the model's buckets.
	Init(tx *bolt.Tx) error
	// Apply folds one event. A batched fact reaches it as the fact, then
	// one record per transition it records for another derivation
	// (eventlog.Record.Transitions, RecordedOn set), all at the fact's
	// sequence. It may queue events to append on out. It
	// must be deterministic — the same events in the same order make the
	// same decisions — because decisions are appended before the batch
	// that made them is committed, and a crash in between folds it again.
	Apply(tx *bolt.Tx, rec eventlog.Record, out *Decisions) error
}

// lingerFor is how long a batch waits for more events once it has one.
const lingerFor = 5 * time.Millisecond

// Flusher is a Handler that buffers writes: Flush is called once per
// checkpoint (one or more batches), inside its transaction, before it
// commits.
type Flusher interface {
	Flush(tx *bolt.Tx) error
}

// Versioned is a Handler whose stored layout has a version. When the file
// holds another version — or none while it already holds a position, a
// file written before versions were kept — the model's buckets are reset
// and it is rebuilt from the log, which is always possible since the log
// is the source of truth. The same happens when Run finds the model ahead
// of the log (the event at its position is not the one it folded): then
// Reset and Init are called again, in Run, so Init must replace whatever
// state it keeps in memory rather than add to it.
type Versioned interface {
	Version() uint32
	// Reset deletes the model's buckets; Init then creates them empty.
	Reset(tx *bolt.Tx) error
}

// metaBucket holds each model's position, mark and layout version.
var metaBucket = []byte("_projection")

// Runner keeps one read model up to date with the log.
type Runner struct {
	db      *bolt.DB
	log     *eventlog.Log
	h       Handler
	logger  zerolog.Logger
	batch   int
	applied func(seq uint64)
	feed    *Feed // nil: a consumer of its own

	mu      sync.Mutex
	pos     uint64
	mark    mark // the event at pos, as folded
	changed chan struct{}
}

// Option configures a Runner.
type Option func(*Runner)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(r *Runner) { r.logger = l } }

// WithBatch sets how many events at most are folded per transaction.
func WithBatch(n int) Option { return func(r *Runner) { r.batch = n } }

// WithAppliedHook calls fn with the position after every batch.
func WithAppliedHook(fn func(seq uint64)) Option { return func(r *Runner) { r.applied = fn } }

// New prepares h's buckets in db and reads its stored position.
func New(db *bolt.DB, log *eventlog.Log, h Handler, opts ...Option) (*Runner, error) {
	r := &Runner{db: db, log: log, h: h, logger: zerolog.Nop(), batch: 1024, changed: make(chan struct{})}
	for _, o := range opts {
		o(r)
	}
	err := db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := meta.Get([]byte(h.Name())); v != nil {
			r.pos = binary.BigEndian.Uint64(v)
		}
		if m, ok := decodeMark(meta.Get(r.markKey())); ok {
			r.mark = m
		}
		if vh, ok := h.(Versioned); ok {
			if err := r.checkVersion(tx, meta, vh); err != nil {
				return err
			}
		}
		return h.Init(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("init read model %s: %w", h.Name(), err)
	}
	return r, nil
}

func (r *Runner) checkVersion(tx *bolt.Tx, meta *bolt.Bucket, vh Versioned) error {
	key := []byte(r.h.Name() + "@version")
	want := vh.Version()
	var have uint32
	stored := meta.Get(key)
	if stored != nil {
		have = binary.BigEndian.Uint32(stored)
	}
	if have != want && (stored != nil || r.pos > 0) {
		r.logger.Warn().Str("model", r.h.Name()).Uint32("stored", have).Uint32("current", want).Uint64("was_at", r.pos).
			Msg("read model layout changed: rebuilding it from the event log")
		if err := vh.Reset(tx); err != nil {
			return fmt.Errorf("reset %s: %w", r.h.Name(), err)
		}
		r.pos, r.mark = 0, mark{}
		if err := meta.Put([]byte(r.h.Name()), binary.BigEndian.AppendUint64(nil, 0)); err != nil {
			return err
		}
		if err := meta.Delete(r.markKey()); err != nil {
			return err
		}
	}
	return meta.Put(key, binary.BigEndian.AppendUint32(nil, want))
}

// Position is the last stream sequence folded.
func (r *Runner) Position() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos
}

// WaitFor blocks until the model has folded sequence seq.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		pos, ch := r.pos, r.changed
		r.mu.Unlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to reach %d (at %d): %w", r.h.Name(), seq, pos, ctx.Err())
		}
	}
}

func (r *Runner) advance(m mark) {
	pos := m.seq
	r.mu.Lock()
	r.pos, r.mark = pos, m
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.applied != nil {
		r.applied(pos)
	}
}

// Run folds events until ctx is cancelled; it returns nil then. It first
// checks that the model is not ahead of the log (see Versioned). A
// transient NATS failure (eventlog.Transient) is retried with back-off,
// the model reported not ready meanwhile, instead of ending Run.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.verify(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var msgs <-chan item
	var errc <-chan error
	var stop func()
	var err error
	if r.feed != nil {
		msgs, errc, stop, err = r.events(ctx) // a feed is joined once: not retried
	} else {
		err = r.retry(ctx, "open the event consumer", func() error {
			var err error
			msgs, errc, stop, err = r.events(ctx)
			return err
		})
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	defer stop()
	// Folded batches share one write transaction until a checkpoint: no
	// event came for checkpointIdle, checkpointEvery has passed, or
	// checkpointMax events are waiting. A batch's decisions are appended
	// right after it is folded, before its commit; a checkpoint is
	// committed only once every decision it covers is acknowledged, so a
	// crash before it replays events whose decisions the fold —
	// deterministic — makes again, and the log's de-duplication and
	// sequence guards refuse the repeats.
	var tx *bolt.Tx
	var txPos mark
	var txSince time.Time
	var txEvents int
	defer func() {
		if tx != nil {
			_ = tx.Rollback()
		}
	}()
	commit := func() error {
		if tx == nil {
			return nil
		}
		t := tx
		tx = nil
		if err := r.checkpoint(t, txPos); err != nil {
			_ = t.Rollback()
			return err
		}
		return nil
	}
	// One batch slice for the whole run: a fold keeps no item.
	batch := make([]item, 0, r.batch)
	for {
		clear(batch) // drop the last batch's events for the collector
		batch = batch[:0]
		// With folded events uncommitted, wait for the next only a moment.
		var idle <-chan time.Time
		var idleTimer *time.Timer
		if tx != nil {
			wait := min(checkpointIdle, max(checkpointEvery-time.Since(txSince), 0))
			idleTimer = time.NewTimer(wait)
			idle = idleTimer.C
		}
		stopIdle := func() {
			if idleTimer != nil {
				idleTimer.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stopIdle()
			// Every decision of what is folded was acknowledged: keep it.
			return commit()
		case err := <-errc:
			stopIdle()
			if ctx.Err() != nil {
				return commit() // the connection closed as we stop
			}
			return fmt.Errorf("read model %s: %w", r.h.Name(), err)
		case <-idle:
			if err := commit(); err != nil {
				return err
			}
			continue
		case m := <-msgs:
			stopIdle()
			batch = append(batch, m)
		}
		// Take what is waiting; linger a moment for more.
		linger := time.NewTimer(lingerFor)
	fill:
		for len(batch) < r.batch {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		if tx == nil {
			var err error
			if tx, err = r.db.Begin(true); err != nil {
				return fmt.Errorf("read model %s: %w", r.h.Name(), err)
			}
			r.mu.Lock()
			txPos = r.mark
			txPos.seq = r.pos // the mark is unknown (zero) for a file from before marks
			r.mu.Unlock()
			txSince, txEvents = time.Now(), 0
		}
		out, pos, err := r.fold(tx, batch, txPos)
		if err != nil {
			return err
		}
		txPos, txEvents = pos, txEvents+len(batch)
		if len(out.entries) > 0 {
			if err := r.appendEntries(ctx, out.entries); err != nil {
				if ctx.Err() != nil {
					return nil // stopped mid-append: the next start folds these events again
				}
				return err
			}
		}
		if time.Since(txSince) >= checkpointEvery || txEvents >= checkpointMax {
			if err := commit(); err != nil {
				return err
			}
		}
	}
}

// checkpointEvery and checkpointMax bound how long and how many folded
// events wait for their commit while more keep arriving: each commit costs
// an fsync and rewrites every page it touched, so under load many batches
// share one, and a derivation changed three times in between is written once.
// A second, not 200 ms: the 100,000-derivation schedule took 18.6–18.9 s
// instead of 19.2–19.3 s; what it costs is a read model's position
// trailing by up to a second under sustained load, and up to a second of
// events folded again after a crash.
const (
	checkpointIdle  = 20 * time.Millisecond
	checkpointEvery = time.Second
	checkpointMax   = 50000
)

// fold applies a batch in tx, after position pos, and returns the decisions
// and the new position.
func (r *Runner) fold(tx *bolt.Tx, batch []item, pos mark) (*Decisions, mark, error) {
	out := &Decisions{}
	for _, it := range batch {
		if it.err != nil {
			// A message we cannot read is logged and passed over:
			// stopping here would stop every model behind it.
			r.logger.Error().Err(it.err).Str("subject", it.subject).Msg("skip undecodable event")
			if it.seq > pos.seq {
				pos = it.at
			}
			continue
		}
		rec := it.rec
		if rec.Seq <= pos.seq {
			continue // folded before a crash; never fold twice
		}
		// A batched fact is folded as each transition it records: no
		// model can read it and miss one.
		for t := range rec.Transitions() {
			if err := r.h.Apply(tx, t, out); err != nil {
				return nil, mark{}, fmt.Errorf("read model %s: apply %s (seq %d): %w", r.h.Name(), rec.Subject, rec.Seq, err)
			}
		}
		pos = it.at
	}
	return out, pos, nil
}

// checkpoint writes the model's buffered changes, position and mark (which
// event is at the position: see verify) in tx and commits it.
func (r *Runner) checkpoint(tx *bolt.Tx, pos mark) error {
	if f, ok := r.h.(Flusher); ok {
		if err := f.Flush(tx); err != nil {
			return fmt.Errorf("read model %s: flush: %w", r.h.Name(), err)
		}
	}
	meta := tx.Bucket(metaBucket)
	if err := meta.Put([]byte(r.h.Name()), binary.BigEndian.AppendUint64(nil, pos.seq)); err != nil {
		return fmt.Errorf("read model %s: %w", r.h.Name(), err)
	}
	if pos.stored != 0 {
		if err := meta.Put(r.markKey(), pos.encode()); err != nil {
			return fmt.Errorf("read model %s: %w", r.h.Name(), err)
		}
	} else if err := meta.Delete(r.markKey()); err != nil {
		return fmt.Errorf("read model %s: %w", r.h.Name(), err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("read model %s: commit: %w", r.h.Name(), err)
	}
	r.advance(pos)
	return nil
}

// appendEntries appends a batch's decisions. Entries that fail transiently (a lost
// connection or acknowledgement, a leader moving) are appended again after
// a back-off, until they land: their ids and guards make a repeat of one
// that did land a no-op (inside the duplicate window: a duplicate; after
// it, a guarded entry conflicts with itself).
func (r *Runner) appendEntries(ctx context.Context, entries []outEntry) error {
	// Pipelined: one round trip for all of a batch's decisions, not one per event.
	batch := make([]eventlog.Item, len(entries))
	for i, e := range entries {
		batch[i] = eventlog.Item{ID: e.ID, Event: e.Event, Expect: e.Expect, ExpectSeq: e.Seq}
	}
	return r.retry(ctx, "append decisions", func() error {
		_, errs, err := r.log.AppendMany(ctx, batch)
		again := batch[:0] // entries to append again, in order
		var cause error
		for i, aerr := range errs {
			switch {
			case aerr == nil:
			case errors.Is(aerr, eventlog.ErrConflict):
				// The aggregate moved on; the fold will see why and decide again.
				r.logger.Debug().Err(aerr).Str("event", batch[i].Event.GetId()).Msg("decision superseded")
			case eventlog.Transient(aerr):
				again = append(again, batch[i])
				cause = cmp.Or(cause, aerr)
			default:
				return fmt.Errorf("read model %s: decisions: %w", r.h.Name(), aerr)
			}
		}
		batch = again
		if len(batch) > 0 {
			return fmt.Errorf("read model %s: decisions: %d of %d appends: %w", r.h.Name(), len(batch), len(errs), cause)
		}
		if err != nil && !eventlog.Transient(err) {
			return fmt.Errorf("read model %s: decisions: %w", r.h.Name(), err)
		}
		return nil
	})
}
