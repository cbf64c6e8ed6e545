package ingress

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// Config wires the stage.
type Config struct {
	Events  *eventlog.Log
	DataDir string // the read model lives in DataDir/ingress.db
	Logger  zerolog.Logger
	// Applied, when set, is told the stream position after every batch
	// the graph folds (benchmarks and tests watch it).
	Applied func(seq uint64)
	// Limits shape the facts the graph appends (zero: defaults, and as many
	// derivations per downstream_failed as the server's max payload takes).
	Limits Limits
	// Feed, when set, is the event feed this process's read models share
	// (the all-in-one); nil: a consumer of its own.
	Feed *projection.Feed
	// Graph, when set, is the model to run (benchmarks read its
	// Resident); nil: a new one. Limits apply to it either way.
	Graph *Graph
}

// Run keeps the graph model and decides until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	db, err := projection.Open(filepath.Join(cfg.DataDir, "ingress.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	opts := []projection.Option{projection.WithLogger(cfg.Logger)}
	if cfg.Feed != nil {
		opts = append(opts, projection.WithFeed(cfg.Feed))
	}
	if cfg.Applied != nil {
		opts = append(opts, projection.WithAppliedHook(cfg.Applied))
	}
	lim := cfg.Limits
	if lim.MaxPerFact <= 0 {
		// As many ids as the server takes in one message.
		lim.MaxPerFact = PerFact(cfg.Events.JetStream().Conn().MaxPayload())
	}
	model := cfg.Graph
	if model == nil {
		model = NewGraph(cfg.Logger)
	}
	r, err := projection.New(db, cfg.Events, model.WithLimits(lim), opts...)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Graph is the ingress read model and its decisions. What is not settled
// — every derivation still to build, with its dependency counter and its
// unsettled direct dependents — is kept in memory, and so is what those
// need; settled derivations leave memory at the next checkpoint and are
// read back from bbolt when a later fold needs one. bbolt is the durable
// copy of all of it: a batch writes only the nodes it changed.
type Graph struct {
	logger   zerolog.Logger
	g        *graph
	lim      Limits
	resident atomic.Int64
}

// Limits shape the facts the graph appends.
type Limits struct {
	// BatchOver: a failure with more derivations than this downstream is
	// recorded as one downstream_failed fact (default 128).
	BatchOver int
	// MaxPerFact bounds the derivations one downstream_failed lists, so
	// that it fits a NATS message (default: what a 1 MiB message holds).
	MaxPerFact int
}

// DefaultBatchOver is Limits.BatchOver's default.
const DefaultBatchOver = 128

// PerFact is how many derivation ids a downstream_failed fact of at most
// maxPayload bytes holds (each id is at most ~40 bytes of JSON).
func PerFact(maxPayload int64) int {
	return int(max(1, (maxPayload-4096)/40))
}

// NewGraph returns the model, for tests and tools that drive a Runner.
func NewGraph(logger zerolog.Logger) *Graph { return &Graph{logger: logger} }

// WithLimits sets the limits (zero fields keep their defaults).
func (m *Graph) WithLimits(l Limits) *Graph {
	m.lim = l
	return m
}

func (m *Graph) limits() Limits {
	l := m.lim
	if l.BatchOver <= 0 {
		l.BatchOver = DefaultBatchOver
	}
	if l.MaxPerFact <= 0 {
		l.MaxPerFact = PerFact(1 << 20)
	}
	return l
}

// ReadModel names the ingress read model (for a shared projection.Feed).
const ReadModel = "ingress"

// The runner finds Flush and Version by type assertion: a renamed method
// would silently stop flushing or versioning without these.
var (
	_ projection.Handler   = (*Graph)(nil)
	_ projection.Flusher   = (*Graph)(nil)
	_ projection.Versioned = (*Graph)(nil)
)

// Name implements projection.Handler.
func (*Graph) Name() string { return ReadModel }

// Filters implements projection.Handler: the derivation facts, and the
// jobsets' attribute lists (what a later jobset needs again).
func (*Graph) Filters() []string {
	return []string{eventlog.KindFilter(eventlog.Drv), eventlog.KindFilter(eventlog.Jobset)}
}

// Version implements projection.Versioned.
func (*Graph) Version() uint32 { return layoutVersion }

// Reset implements projection.Versioned.
func (*Graph) Reset(tx *bolt.Tx) error {
	for _, b := range buckets {
		if tx.Bucket(b) == nil {
			continue
		}
		if err := tx.DeleteBucket(b); err != nil {
			return err
		}
	}
	return nil
}

// Init implements projection.Handler: it makes the buckets and loads what
// is not settled.
func (m *Graph) Init(tx *bolt.Tx) error {
	for _, b := range buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	m.g = newGraph()
	if err := m.g.open(tx); err != nil {
		return err
	}
	m.resident.Store(int64(len(m.g.num)))
	return nil
}

// Flush implements projection.Flusher: the changes since the last
// checkpoint are written before its transaction commits, and what nothing
// needs any more leaves memory.
func (m *Graph) Flush(tx *bolt.Tx) error {
	m.g.tx = tx
	if err := m.g.flush(tx); err != nil {
		return err
	}
	m.resident.Store(int64(len(m.g.num)))
	return nil
}

// Resident is how many derivations the model held in memory after its
// last checkpoint (safe to call from any goroutine), for tests and
// benchmarks.
func (m *Graph) Resident() int { return int(m.resident.Load()) }

func event(id, cause string, p any) *eventsv1.Event {
	ev := &eventsv1.Event{Id: id, CausationId: cause}
	switch p := p.(type) {
	case *eventsv1.DrvBuildable:
		ev.Payload = &eventsv1.Event_DrvBuildable{DrvBuildable: p}
	case *eventsv1.DrvBuildSucceeded:
		ev.Payload = &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: p}
	case *eventsv1.DrvDependencyFailed:
		ev.Payload = &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: p}
	case *eventsv1.DrvBlocked:
		ev.Payload = &eventsv1.Event_DrvBlocked{DrvBlocked: p}
	case *eventsv1.DrvRequeued:
		ev.Payload = &eventsv1.Event_DrvRequeued{DrvRequeued: p}
	case *eventsv1.DrvInterrupted:
		ev.Payload = &eventsv1.Event_DrvInterrupted{DrvInterrupted: p}
	default:
		panic(fmt.Sprintf("ingress: no event for %T", p))
	}
	return ev
}

// Requeue reasons ingress appends (DrvRequeued.reason).
const (
	ReasonNeededAgain  = "needed-again"
	ReasonCauseCleared = "cause-cleared"
)

// requeue appends a requeue of n, guarded on its last fact, and marks it
// asked so that nothing asks twice before the fact is back.
func (m *Graph) requeue(n int32, id func(drvID string, lastSeq uint64) string, reason, cause string, out *projection.Decisions) {
	g := m.g
	nd := &g.nodes[n]
	if nd.asked {
		return
	}
	out.Append(nd.id, event(id(nd.id, nd.lastSeq), cause,
		&eventsv1.DrvRequeued{Reason: reason, NextAttempt: nd.drv.Attempt + 1}), nd.lastSeq)
	nd.asked = true
	g.touch(n)
}

// Apply implements projection.Handler.
func (m *Graph) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	g := m.g
	g.tx = tx
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_JobsetEvaluated:
		return m.listed(rec, "e", p.JobsetEvaluated.GetAttrs(), out)
	case *eventsv1.Event_JobsetAttrsListed:
		return m.listed(rec, strconv.FormatUint(uint64(p.JobsetAttrsListed.GetPart()), 10), p.JobsetAttrsListed.GetAttrs(), out)
	case *eventsv1.Event_JobsetConcluded:
		return tx.Bucket(jobsetStateBucket).Delete([]byte(rec.ID))
	case *eventsv1.Event_JobsetCancelled:
		return m.jobsetCancelled(rec, p.JobsetCancelled.GetActor(), out)
	case *eventsv1.Event_JobsetRestarted:
		return m.jobsetRestarted(rec, p.JobsetRestarted.GetActor(), out)
	}
	if rec.Aggregate != eventlog.Drv {
		return nil
	}
	if rec.RecordedOn != "" {
		return m.listedFailed(rec)
	}
	n, err := g.node(rec.ID)
	if err != nil {
		return err
	}
	nd := &g.nodes[n]
	prev := nd.drv
	next, err := buildstate.Next(prev, rec.Event)
	if err != nil {
		// Deciders check before appending, so this is a bug elsewhere;
		// stopping the graph for every other derivation would be worse.
		m.logger.Error().Err(err).Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	nd.drv, nd.lastSeq, nd.asked = next, rec.Seq, false
	g.touch(n)
	if next.State != buildstate.Queued {
		g.clearDoomed(n) // a verdict on its way now finds it moved on
	}
	if prev.State == buildstate.Blocked && next.State != buildstate.Blocked {
		if err := m.unblock(n, prev.Cause); err != nil {
			return err
		}
	}
	if err := m.indexFailed(n, prev, next); err != nil {
		return err
	}
	if prev.State != buildstate.None && !prev.State.Settled() && next.State.Settled() {
		g.unregister(n)
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		return m.discovered(tx, rec, n, p.DrvDiscovered, out)
	case *eventsv1.Event_DrvBuildSucceeded:
		m.succeeded(rec, n, out)
	case *eventsv1.Event_DrvBuildFailed:
		m.propagate(rec, n, out, false)
	case *eventsv1.Event_DrvInterrupted:
		m.propagate(rec, n, out, true)
	case *eventsv1.Event_DrvDependencyFailed:
		// Its cause may have succeeded (a retry, a later change), or been
		// retried on purpose, while this verdict was on its way: clear it
		// at once.
		if c, ok := g.lookup(p.DrvDependencyFailed.GetCauseDrvId()); ok && g.nodes[c].drv.State != buildstate.Failed && g.nodes[c].discovered() {
			m.requeue(n, eventlog.CauseClearedID, ReasonCauseCleared, rec.Event.GetId(), out)
		}
	case *eventsv1.Event_DrvBlocked:
		return m.blocked(rec, n, p.DrvBlocked.GetCauseDrvId(), out)
	case *eventsv1.Event_DrvRequeued:
		return m.requeued(rec, n, prev, out)
	}
	return nil
}

func (m *Graph) discovered(tx *bolt.Tx, rec eventlog.Record, n int32, d *eventsv1.DrvDiscovered, out *projection.Decisions) error {
	g := m.g
	if err := putInfo(tx, rec.ID, rec.Seq, d); err != nil {
		return err
	}
	g.setInfo(n, rec.Seq, d)
	if err := g.setInputs(n, d.GetInputDrvs()); err != nil {
		return err
	}
	return m.decide(rec, n, true, d.GetOutputsValid(), out)
}

// decide counts n's unfinished inputs and appends what follows from them:
// a transitive failure when one failed for good, a block when one is
// interrupted, buildable when none is left. A derivation just discovered
// is not blocked by an interrupted input: the jobset that discovered it
// needs that input again and queues it once its attributes are listed (a
// block now would settle the jobset before that). One queued again
// (fresh false) is blocked by an interrupted input nothing asked for again.
// A derivation whose outputs are valid already succeeds without a build.
func (m *Graph) decide(rec eventlog.Record, n int32, fresh, valid bool, out *projection.Decisions) error {
	g := m.g
	var failedID, blockedID int32 = -1, -1
	var pending int32
	for _, dep := range g.nodes[n].inputs {
		dn := &g.nodes[dep]
		if !dn.discovered() {
			// The evaluator appends inputs before their dependents; a
			// missing one is counted as unfinished and logged.
			m.logger.Warn().Str("drv", rec.ID).Str("dep", dn.id).Msg("dependency not yet discovered")
			pending++
			continue
		}
		if dn.drv.State == buildstate.Succeeded {
			continue
		}
		pending++
		switch dn.drv.State {
		case buildstate.Queued:
			switch {
			case dn.doomed > 0 && !dn.doomBlocked:
				failedID = dn.doomed - 1
			case dn.doomed > 0 && !fresh && g.stillInterrupted(dn.doomed-1):
				blockedID = dn.doomed - 1
			}
		case buildstate.Failed:
			failedID = dep
		case buildstate.TransitiveFailure:
			c, err := g.node(dn.drv.Cause)
			if err != nil {
				return err
			}
			failedID = c
		case buildstate.Interrupted:
			if !fresh && !dn.asked {
				blockedID = dep
			}
		case buildstate.Blocked:
			if fresh || dn.asked {
				break
			}
			c, err := g.node(dn.drv.Cause)
			if err != nil {
				return err
			}
			if g.stillInterrupted(c) {
				blockedID = c
			}
		}
	}
	nd := &g.nodes[n]
	nd.pending = pending
	cause := rec.Event.GetId()
	switch {
	case valid:
		out.Append(nd.id, event(eventlog.CachedID(nd.id), cause, &eventsv1.DrvBuildSucceeded{Cached: true}), nd.lastSeq)
	case failedID >= 0:
		// A verdict inherited here is on its way too: dependents
		// discovered before it lands inherit it from this node.
		g.setDoomed(n, failedID, false)
		c := &g.nodes[failedID]
		out.Append(nd.id, event(eventlog.DependencyFailedID(nd.id, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: c.id, CauseDrvPath: c.path}), nd.lastSeq)
	case blockedID >= 0:
		g.setDoomed(n, blockedID, true)
		c := &g.nodes[blockedID]
		out.Append(nd.id, event(eventlog.BlockedID(nd.id, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: c.id, CauseDrvPath: c.path}), nd.lastSeq)
	default:
		return m.maybeBuildable(n, cause, out)
	}
	return nil
}

// stillInterrupted: c is interrupted and nothing has asked for it again.
func (g *graph) stillInterrupted(c int32) bool {
	return g.nodes[c].drv.State == buildstate.Interrupted && !g.nodes[c].asked
}

func (m *Graph) maybeBuildable(n int32, cause string, out *projection.Decisions) error {
	nd := &m.g.nodes[n]
	if nd.drv.State != buildstate.Queued || nd.pending > 0 {
		return nil
	}
	if nd.key == 0 {
		return fmt.Errorf("derivation %s is queued but was never discovered", nd.id)
	}
	b, err := buildstate.DecideBuildable(nd.drv, int(nd.pending), m.g.info(n))
	if err != nil {
		return err
	}
	out.Append(nd.id, event(eventlog.BuildableID(nd.id, b.GetAttempt()), cause, b), nd.lastSeq)
	return nil
}

// succeeded counts the success in every direct dependent and makes the
// ones with nothing left Buildable.
func (m *Graph) succeeded(rec eventlog.Record, n int32, out *projection.Decisions) {
	g := m.g
	cause := rec.Event.GetId()
	g.eachDependent(n, func(dep int32) {
		dn := &g.nodes[dep]
		if dn.pending > 0 {
			dn.pending--
		}
		g.touch(dep)
		if err := m.maybeBuildable(dep, cause, out); err != nil {
			m.logger.Error().Err(err).Str("drv", dn.id).Msg("cannot decide buildable")
		}
	})
}

// requeued folds a derivation queued again: it counts its inputs afresh
// (its counter was not kept while it was settled) and decides like a new
// one. When it was interrupted, what it blocked follows it.
func (m *Graph) requeued(rec eventlog.Record, n int32, prev buildstate.Drv, out *projection.Decisions) error {
	g := m.g
	if prev.State.Settled() {
		ids, err := g.inputIDs(n)
		if err != nil {
			return err
		}
		if err := g.setInputs(n, ids); err != nil {
			return err
		}
	}
	if prev.State == buildstate.Interrupted {
		if err := m.causeRequeued(rec, n, out); err != nil {
			return err
		}
	}
	if prev.State == buildstate.Failed {
		if err := m.failedRequeued(rec, n, out); err != nil {
			return err
		}
	}
	return m.decide(rec, n, false, false, out)
}

// causeRequeued lets the derivations c blocked follow it: those Blocked
// are queued again (cause-cleared), and the marks of blocks still on
// their way are dropped, so that nothing inherits them; when such a block
// lands, it finds c no longer interrupted and is cleared at once.
func (m *Graph) causeRequeued(rec eventlog.Record, c int32, out *projection.Decisions) error {
	g := m.g
	g.walk(c, func(d int32) bool {
		dn := &g.nodes[d]
		if dn.drv.State != buildstate.Queued || dn.doomed != c+1 {
			return false
		}
		g.clearDoomed(d)
		g.touch(d)
		return true
	})
	prefix := seqKey(g.nodes[c].key)
	var keys [][]byte
	cur := g.tx.Bucket(blockedBucket).Cursor()
	for k, _ := cur.Seek(prefix); k != nil && len(k) == 16 && string(k[:8]) == string(prefix); k, _ = cur.Next() {
		keys = append(keys, append([]byte(nil), k[8:]...))
	}
	causeID := g.nodes[c].id
	for _, k := range keys {
		v := g.tx.Bucket(nodesBucket).Get(k)
		if v == nil {
			return fmt.Errorf("blocked derivation %x: not stored", k)
		}
		d, err := decode(v)
		if err != nil {
			return err
		}
		b, err := g.node(d.id)
		if err != nil {
			return err
		}
		if bn := &g.nodes[b]; bn.drv.State == buildstate.Blocked && bn.drv.Cause == causeID {
			m.requeue(b, eventlog.CauseClearedID, ReasonCauseCleared, rec.Event.GetId(), out)
		}
	}
	return nil
}

// blocked folds a block: the blocked bucket remembers it for when its
// cause is queued again; a cause that already was is followed at once.
func (m *Graph) blocked(rec eventlog.Record, n int32, causeID string, out *projection.Decisions) error {
	g := m.g
	c, err := g.node(causeID)
	if err != nil {
		return err
	}
	if !g.nodes[c].discovered() {
		m.logger.Error().Str("drv", rec.ID).Str("cause", causeID).Msg("blocked by a derivation never discovered")
		return nil
	}
	if !g.stillInterrupted(c) {
		m.requeue(n, eventlog.CauseClearedID, ReasonCauseCleared, rec.Event.GetId(), out)
	}
	return g.tx.Bucket(blockedBucket).Put(blockedKey(g.nodes[c].key, g.nodes[n].key), nil)
}

// unblock forgets that n was blocked by causeID.
func (m *Graph) unblock(n int32, causeID string) error {
	g := m.g
	c, err := g.node(causeID)
	if err != nil || g.nodes[c].key == 0 {
		return err
	}
	return g.tx.Bucket(blockedBucket).Delete(blockedKey(g.nodes[c].key, g.nodes[n].key))
}

// listed folds one list of a jobset's attributes (a jobset_attrs_listed
// part or its jobset_evaluated): what the attributes need that is
// interrupted or blocked is queued again, inputs first, so that a later
// change does not inherit the verdicts of an earlier one's infrastructure.
// Failures stay cached. A list folded before (the same fact replayed after
// the duplicate window) is passed over.
func (m *Graph) listed(rec eventlog.Record, part string, attrs []*eventsv1.JobAttr, out *projection.Decisions) error {
	g := m.g
	seen := g.tx.Bucket(jobsetsBucket)
	key := append(append([]byte(rec.ID), 0), part...)
	if seen.Get(key) != nil {
		m.logger.Info().Str("jobset", rec.ID).Str("part", part).Uint64("seq", rec.Seq).Msg("attributes listed again: already folded")
		return nil
	}
	var ids []string
	for _, a := range attrs {
		if a.GetDrvId() != "" {
			ids = append(ids, a.GetDrvId())
		}
	}
	if err := seen.Put(key, []byte(strings.Join(ids, "\n"))); err != nil {
		return err
	}
	states := g.tx.Bucket(jobsetStateBucket)
	if st := states.Get([]byte(rec.ID)); st != nil && st[0] == jobsetCancelled {
		// Cancelled before its evaluation was recorded: what this part
		// needs is not built for it.
		return m.cancel(rec, ids, cancelActor(st), out)
	}
	if err := states.Put([]byte(rec.ID), []byte{jobsetLive}); err != nil {
		return err
	}
	g.newGen()
	for _, id := range ids {
		if err := m.need(rec, id, nil, out); err != nil {
			return err
		}
	}
	return nil
}

// need walks root's closure depth-first through what may hide an
// interruption (queued, interrupted or blocked derivations; the rest have
// their inputs succeeded, or failed for good) and queues the interrupted
// and blocked ones again, each after its inputs.
//
// With restart set (a jobset someone restarted), failed derivations are
// queued again too (reason retried, naming restart), and transitive
// failures are walked through to reach them: each follows its cause.
func (m *Graph) need(rec eventlog.Record, rootID string, restart *eventsv1.Actor, out *projection.Decisions) error {
	g := m.g
	root, err := g.node(rootID)
	if err != nil {
		return err
	}
	descends := func(n int32) bool {
		switch g.nodes[n].drv.State {
		case buildstate.Queued, buildstate.Interrupted, buildstate.Blocked:
			return true
		case buildstate.TransitiveFailure:
			return restart != nil
		}
		return false
	}
	type frame struct {
		n      int32
		inputs []string
		i      int
	}
	var stack []frame
	push := func(n int32) error {
		if !g.mark(n) {
			return nil
		}
		if restart != nil && g.nodes[n].drv.State == buildstate.Failed {
			// Its inputs all succeeded: nothing below it to walk.
			stack = append(stack, frame{n: n})
			return nil
		}
		if !descends(n) {
			return nil
		}
		f := frame{n: n}
		if g.nodes[n].registered {
			for _, in := range g.nodes[n].inputs {
				f.inputs = append(f.inputs, g.nodes[in].id)
			}
		} else if f.inputs, err = g.inputIDs(n); err != nil {
			return err
		}
		stack = append(stack, f)
		return nil
	}
	if err := push(root); err != nil {
		return err
	}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.i < len(top.inputs) {
			id := top.inputs[top.i]
			top.i++
			in, err := g.node(id)
			if err != nil {
				return err
			}
			if err := push(in); err != nil {
				return err
			}
			continue
		}
		n := top.n
		stack = stack[:len(stack)-1]
		switch g.nodes[n].drv.State {
		case buildstate.Interrupted, buildstate.Blocked:
			m.requeue(n, eventlog.NeededAgainID, ReasonNeededAgain, rec.Event.GetId(), out)
		case buildstate.Failed:
			m.retry(n, restart, rec.Event.GetId(), out)
		}
	}
	return nil
}

// propagate marks every Queued derivation downstream of a failed (or
// interrupted) one as TransitiveFailure (or Blocked), naming it as cause.
// A failure with more than limits.BatchOver derivations downstream is
// recorded as one downstream_failed fact on the failed derivation instead
// of one dependency_failed on each (as many as fit a message; the rest
// one each).
func (m *Graph) propagate(rec eventlog.Record, n int32, out *projection.Decisions, blocked bool) {
	g := m.g
	path := g.nodes[n].path
	cause := rec.Event.GetId()
	var down []int32
	g.walk(n, func(d int32) bool {
		if g.nodes[d].drv.State != buildstate.Queued {
			return false
		}
		down = append(down, d)
		return true
	})
	one := func(d int32) {
		dn := &g.nodes[d]
		switch {
		case blocked:
			out.Append(dn.id, event(eventlog.BlockedID(dn.id, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.lastSeq)
		default:
			out.Append(dn.id, event(eventlog.DependencyFailedID(dn.id, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.lastSeq)
		}
	}
	lim := m.limits()
	if blocked || len(down) <= lim.BatchOver {
		for _, d := range down {
			g.setDoomed(d, n, blocked)
			g.touch(d)
			one(d)
		}
		return
	}
	// Interruptions stay one fact per derivation: their cause may be
	// re-queued, and each verdict must then be cleared on its own.
	fact := &eventsv1.DrvDownstreamFailed{CauseDrvPath: path}
	for _, d := range down {
		dn := &g.nodes[d]
		if dn.doomed != 0 {
			// Already on its way to TransitiveFailure from an earlier
			// failure: it needs no second verdict.
			continue
		}
		g.setDoomed(d, n, false)
		g.touch(d)
		if len(fact.DrvIds) < lim.MaxPerFact {
			fact.DrvIds = append(fact.DrvIds, dn.id)
		} else {
			one(d)
		}
	}
	if len(fact.DrvIds) > 0 {
		// Guarded on the failed derivation's own last event: a replay (a
		// rebuilt read model) finds this fact after it and is refused.
		out.Append(rec.ID, &eventsv1.Event{Id: eventlog.DownstreamFailedID(rec.ID, rec.Seq), CausationId: cause,
			Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: fact}}, g.nodes[n].lastSeq)
	}
}

// listedFailed folds the dependency_failed a downstream_failed fact
// records for one derivation it lists (rec.RecordedOn is the failed one).
// Its own last sequence stays: the fact is not on its subjects, which is
// what its guards check.
func (m *Graph) listedFailed(rec eventlog.Record) error {
	g := m.g
	d, err := g.node(rec.ID)
	if err != nil {
		return err
	}
	if !g.nodes[d].discovered() {
		m.logger.Error().Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("downstream_failed names a derivation never discovered")
		return nil
	}
	dn := &g.nodes[d]
	prev := dn.drv
	next, err := buildstate.Next(prev, rec.Event)
	if err != nil {
		m.logger.Error().Err(err).Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	dn.drv = next
	g.clearDoomed(d)
	g.touch(d)
	if prev.State == buildstate.Blocked {
		if err := m.unblock(d, prev.Cause); err != nil {
			return err
		}
	}
	if err := m.indexFailed(d, prev, next); err != nil {
		return err
	}
	if !prev.State.Settled() {
		g.unregister(d)
	}
	return nil
}
