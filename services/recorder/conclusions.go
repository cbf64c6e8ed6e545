package recorder

import (
	"bytes"
	"fmt"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// Conclusions is the recorder's read model of derivation outcomes,
// jobsets and changes.
//
// The rows of the derivations in flight, and how many watch entries each
// derivation has, are held in memory as well as in the file: Init loads
// them, Flush writes back the rows a batch changed. Everything else — the
// rows of settled derivations, jobsets, changes, attributes — is read from
// the file when needed, so memory grows with the work in flight, not with
// history. Should a batch's transaction not commit, memory is ahead of the
// file, and the next batch reloads it.
//
// Every fold is idempotent for a fact it has already applied: a fact
// appended again more than the duplicate window later (a redelivery, a
// crashed writer's re-run) is a new event in the log but decides nothing
// twice.
type Conclusions struct {
	logger zerolog.Logger
	// resultBudget bounds the JSON bytes of results a conclusion lists
	// (0: DefaultResultBudget).
	resultBudget int
	drvs         *drvTable
	// watched counts the watch entries of each derivation some jobset not
	// yet concluded watches: the only ones whose settling can move a
	// jobset.
	watched map[string]uint32
	// awaiting counts, per derivation, the watch entries waiting for its
	// needed-again re-queue (buildstate.State.NeededAgain: ingress
	// re-queues a derivation Interrupted or Blocked when a jobset that
	// needs it is listed, as that jobset's fact's next fact on it).
	awaiting map[string]uint32
	// tx is the transaction of the batch being folded; uncommitted is set
	// from a batch's first fold until its transaction commits.
	tx          *bolt.Tx
	uncommitted bool
	// pos is the latest stream sequence folded.
	pos uint64
}

// NewConclusions returns the model.
func NewConclusions(logger zerolog.Logger) *Conclusions {
	return &Conclusions{logger: logger, drvs: newDrvTable(), watched: map[string]uint32{}, awaiting: map[string]uint32{}}
}

// WithResultBudget bounds the JSON bytes of results one jobset_concluded
// lists, so that it fits one message.
func (c *Conclusions) WithResultBudget(bytes int) *Conclusions {
	c.resultBudget = bytes
	return c
}

// The runner finds Flush and Version by type assertion: a renamed method
// would silently stop flushing or versioning without these.
var (
	_ projection.Handler   = (*Conclusions)(nil)
	_ projection.Flusher   = (*Conclusions)(nil)
	_ projection.Versioned = (*Conclusions)(nil)
)

// Version implements projection.Versioned. Version 4: rows of settled
// derivations keyed by id in a bucket of their own (drvTable); watch
// entries removed when their jobset concludes; conclusions decided kept until
// the log holds them; repeated facts ignored. Version 3: derivation rows in
// a binary encoding (binrow) keyed by their discovered sequence; watch
// keys with a 0 byte between the derivation and the jobset id; a jobset's
// attributes in a bucket of their own.
func (*Conclusions) Version() uint32 { return 4 }

// Reset implements projection.Versioned.
func (*Conclusions) Reset(tx *bolt.Tx) error {
	for _, b := range buckets {
		if tx.Bucket(b) == nil {
			continue
		}
		if err := tx.DeleteBucket(b); err != nil {
			return fmt.Errorf("delete %s: %w", b, err)
		}
	}
	return nil
}

// Flush implements projection.Flusher.
func (c *Conclusions) Flush(tx *bolt.Tx) error {
	// Through begin too: a batch that folded nothing must not write rows
	// a failed batch left in memory.
	if err := c.begin(tx); err != nil {
		return err
	}
	return c.drvs.flush(tx.Bucket(drvsBucket), tx.Bucket(settledBucket), c.pos)
}

// Name implements projection.Handler.
func (*Conclusions) Name() string { return ReadModel }

// ReadModel names the recorder's read model (for a shared projection.Feed).
const ReadModel = "recorder"

// Filters implements projection.Handler.
func (*Conclusions) Filters() []string {
	return []string{eventlog.KindFilter(eventlog.Change), eventlog.KindFilter(eventlog.Jobset), eventlog.KindFilter(eventlog.Drv), eventlog.KindFilter(eventlog.Check)}
}

// Init implements projection.Handler.
func (c *Conclusions) Init(tx *bolt.Tx) error {
	for _, b := range buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return c.load(tx)
}

// load reads the in-memory state from the file.
func (c *Conclusions) load(tx *bolt.Tx) error {
	c.tx, c.uncommitted = nil, false
	if err := c.drvs.load(tx.Bucket(drvsBucket)); err != nil {
		return err
	}
	clear(c.watched)
	clear(c.awaiting)
	return tx.Bucket(watchBucket).ForEach(func(k, v []byte) error {
		drv, _, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return fmt.Errorf("decode %s/%q: no separator", watchBucket, k)
		}
		w, err := decodeWatch(v)
		if err != nil {
			return err
		}
		c.watched[string(drv)]++
		if w.awaiting {
			c.awaiting[string(drv)]++
		}
		return nil
	})
}

// begin is called by every fold and flush. The first of a batch checks
// that the previous batch that changed memory committed, and reloads
// memory from the file if it did not.
func (c *Conclusions) begin(tx *bolt.Tx) error {
	if tx == c.tx {
		return nil
	}
	if c.uncommitted {
		c.logger.Warn().Msg("a batch did not commit: reloading the read model")
		if err := c.load(tx); err != nil {
			return err
		}
	}
	c.tx, c.uncommitted = tx, true
	tx.OnCommit(func() { c.uncommitted = false })
	return nil
}

// Apply implements projection.Handler.
func (c *Conclusions) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	if err := c.begin(tx); err != nil {
		return err
	}
	c.pos = max(c.pos, rec.Seq)
	switch rec.Aggregate {
	case eventlog.Drv:
		return c.drv(tx, rec, out)
	case eventlog.Jobset:
		return c.jobset(tx, rec, out)
	case eventlog.Change:
		return c.change(tx, rec, out)
	case eventlog.Check:
		return c.check(tx, rec, out)
	}
	return nil
}

// decide keeps a conclusion until the log holds it and appends it,
// guarded on the aggregate's last event.
func (c *Conclusions) decide(tx *bolt.Tx, kind byte, id string, ev *eventsv1.Event, last uint64, out *projection.Decisions) error {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode conclusion of %s: %w", id, err)
	}
	if err := tx.Bucket(decidedBucket).Put(decidedKey(kind, id), raw); err != nil {
		return err
	}
	out.Append(id, ev, last)
	return nil
}

// redecide appends again a conclusion decided earlier, now guarded on
// last: another fact of the aggregate landed before it (a repeat of an
// earlier one), so the first append's guard fails. The same conclusion,
// with the same id, so that it lands once.
func (c *Conclusions) redecide(tx *bolt.Tx, kind byte, id string, last uint64, out *projection.Decisions) error {
	raw := tx.Bucket(decidedBucket).Get(decidedKey(kind, id))
	if raw == nil {
		return nil
	}
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(raw, ev); err != nil {
		return fmt.Errorf("decode conclusion of %s: %w", id, err)
	}
	out.Append(id, ev, last)
	return nil
}
