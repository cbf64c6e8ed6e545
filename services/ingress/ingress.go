package ingress

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// Config wires the stage.
type Config struct {
	Log     *eventlog.Log
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
		lim.MaxPerFact = PerFact(cfg.Log.JetStream().Conn().MaxPayload())
	}
	r, err := projection.New(db, cfg.Log, NewGraph(cfg.Logger).WithLimits(lim), opts...)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Graph is the ingress read model and its decisions. The whole graph —
// every derivation's state, dependency counter and direct dependents — is
// kept in memory, bbolt being its durable copy: a fold reads nothing from
// the file, and a batch writes only the nodes it changed.
type Graph struct {
	logger zerolog.Logger
	g      *graph
	lim    Limits
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

// Name implements projection.Handler.
func (*Graph) Name() string { return ReadModel }

// Filters implements projection.Handler.
func (*Graph) Filters() []string { return []string{eventlog.KindFilter(eventlog.Drv)} }

// Version implements projection.Versioned.
func (*Graph) Version() uint32 { return layoutVersion }

// Reset implements projection.Versioned.
func (*Graph) Reset(tx *bolt.Tx) error {
	for _, b := range [][]byte{nodesBucket, infosBucket, idsBucket} {
		if tx.Bucket(b) == nil {
			continue
		}
		if err := tx.DeleteBucket(b); err != nil {
			return err
		}
	}
	return nil
}

// Init implements projection.Handler: it makes the buckets and loads the
// graph from them.
func (m *Graph) Init(tx *bolt.Tx) error {
	for _, b := range [][]byte{nodesBucket, infosBucket, idsBucket} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	m.g = newGraph()
	return m.g.load(tx)
}

// Flush implements projection.Flusher: the batch's node changes are
// written before its transaction commits.
func (m *Graph) Flush(tx *bolt.Tx) error { return m.g.flush(tx) }

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
	default:
		panic(fmt.Sprintf("ingress: no event for %T", p))
	}
	return ev
}

// Apply implements projection.Handler.
func (m *Graph) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	g := m.g
	n := g.intern(rec.ID)
	nd := &g.nodes[n]
	next, err := buildstate.Next(nd.drv, rec.Event)
	if err != nil {
		// Deciders check before appending, so this is a bug elsewhere;
		// stopping the graph for every other derivation would be worse.
		m.logger.Error().Err(err).Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	nd.drv, nd.lastSeq = next, rec.Seq
	g.touch(n)
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		return m.discovered(tx, rec, n, p.DrvDiscovered, out)
	case *eventsv1.Event_DrvBuildSucceeded:
		m.succeeded(rec, n, out)
	case *eventsv1.Event_DrvBuildFailed:
		m.propagate(rec, n, out, false)
	case *eventsv1.Event_DrvInterrupted:
		m.propagate(rec, n, out, true)
	case *eventsv1.Event_DrvDependencyFailed, *eventsv1.Event_DrvBlocked:
		nd.doomed, nd.doomBlocked = 0, false
		// Its cause may have succeeded (a retry, a later change) while
		// this verdict was on its way: clear it at once.
		causeID := rec.Event.GetDrvDependencyFailed().GetCauseDrvId()
		if causeID == "" {
			causeID = rec.Event.GetDrvBlocked().GetCauseDrvId()
		}
		if c, ok := g.lookup(causeID); ok && g.nodes[c].drv.State == buildstate.Succeeded {
			out.Append(rec.ID, event(fmt.Sprintf("cleared-%s-%d", rec.ID, rec.Seq), rec.Event.GetId(), &eventsv1.DrvRequeued{Reason: "cause-cleared", NextAttempt: nd.drv.Attempt + 1}), nd.lastSeq)
		}
	case *eventsv1.Event_DrvRequeued:
		return m.maybeBuildable(n, rec.Event.GetId(), out)
	case *eventsv1.Event_DrvDownstreamFailed:
		ids, each, _ := buildstate.Downstream(rec.ID, rec.Event)
		m.downstreamFailed(rec, ids, each)
	}
	return nil
}

func (m *Graph) discovered(tx *bolt.Tx, rec eventlog.Record, n int32, d *eventsv1.DrvDiscovered, out *projection.Outbox) error {
	g := m.g
	if err := putInfo(tx, rec.ID, rec.Seq, d); err != nil {
		return err
	}
	g.setInfo(n, rec.Seq, d)
	g.addInputs(n, d.GetInputDrvs())
	var failedID, blockedID int32 = -1, -1
	var pending int32
	for _, depID := range d.GetInputDrvs() {
		dep, _ := g.lookup(depID) // interned by addInputs
		dn := &g.nodes[dep]
		if !dn.discovered() {
			// The evaluator appends inputs before their dependents; a
			// missing one is counted as unfinished and logged.
			m.logger.Warn().Str("drv", rec.ID).Str("dep", depID).Msg("dependency not yet discovered")
			pending++
			continue
		}
		if dn.drv.State == buildstate.Succeeded {
			continue
		}
		pending++
		switch {
		case dn.drv.State == buildstate.Queued && dn.doomed > 0 && !dn.doomBlocked:
			failedID = dn.doomed - 1
		case dn.drv.State == buildstate.Queued && dn.doomed > 0:
			blockedID = dn.doomed - 1
		}
		switch dn.drv.State {
		case buildstate.Failed:
			failedID = dep
		case buildstate.TransitiveFailure:
			failedID = g.intern(dn.drv.Cause)
		case buildstate.Interrupted:
			blockedID = dep
		case buildstate.Blocked:
			blockedID = g.intern(dn.drv.Cause)
		}
	}
	nd := &g.nodes[n]
	nd.pending = pending
	// A verdict inherited here is on its way too: dependents discovered
	// before it lands inherit it from this node.
	switch {
	case d.GetOutputsValid():
	case failedID >= 0:
		nd.doomed, nd.doomBlocked = failedID+1, false
	case blockedID >= 0:
		nd.doomed, nd.doomBlocked = blockedID+1, true
	}
	cause := rec.Event.GetId()
	switch {
	case d.GetOutputsValid():
		out.Append(rec.ID, event("cached-"+rec.ID, cause, &eventsv1.DrvBuildSucceeded{Cached: true}), rec.Seq)
	case failedID >= 0:
		c := &g.nodes[failedID]
		out.Append(rec.ID, event(fmt.Sprintf("depfailed-%s-%d", rec.ID, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: c.id, CauseDrvPath: c.path}), rec.Seq)
	case blockedID >= 0:
		c := &g.nodes[blockedID]
		out.Append(rec.ID, event(fmt.Sprintf("blocked-%s-%d", rec.ID, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: c.id, CauseDrvPath: c.path}), rec.Seq)
	default:
		return m.maybeBuildable(n, cause, out)
	}
	return nil
}

func (m *Graph) maybeBuildable(n int32, cause string, out *projection.Outbox) error {
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
	out.Append(nd.id, event("buildable-"+nd.id+"-"+strconv.FormatUint(uint64(b.GetAttempt()), 10), cause, b), nd.lastSeq)
	return nil
}

// succeeded counts the success in every direct dependent, makes the ones
// with nothing left Buildable, and re-queues what this derivation had
// failed or blocked before it succeeded.
func (m *Graph) succeeded(rec eventlog.Record, n int32, out *projection.Outbox) {
	g := m.g
	cause := rec.Event.GetId()
	for _, dep := range g.dependents[n] {
		dn := &g.nodes[dep]
		if !dn.discovered() {
			continue
		}
		if dn.pending > 0 {
			dn.pending--
		}
		g.touch(dep)
		if err := m.maybeBuildable(dep, cause, out); err != nil {
			m.logger.Error().Err(err).Str("drv", dn.id).Msg("cannot decide buildable")
		}
	}
	g.walk(n, func(d int32) bool {
		dn := &g.nodes[d]
		s := dn.drv.State
		if s == buildstate.Queued && dn.doomed == n+1 {
			dn.doomed, dn.doomBlocked = 0, false
			g.touch(d)
			return true
		}
		if (s != buildstate.TransitiveFailure && s != buildstate.Blocked) || dn.drv.Cause != rec.ID {
			return false
		}
		out.Append(dn.id, event(fmt.Sprintf("cleared-%s-%d", dn.id, rec.Seq), cause, &eventsv1.DrvRequeued{Reason: "cause-cleared", NextAttempt: dn.drv.Attempt + 1}), dn.lastSeq)
		return true
	})
}

// propagate marks every Queued derivation downstream of a failed (or
// interrupted) one as TransitiveFailure (or Blocked), naming it as cause.
// A failure with more than limits.BatchOver derivations downstream is
// recorded as one downstream_failed fact on the failed derivation instead
// of one dependency_failed on each (as many as fit a message; the rest
// one each).
func (m *Graph) propagate(rec eventlog.Record, n int32, out *projection.Outbox, blocked bool) {
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
			out.Append(dn.id, event(fmt.Sprintf("blocked-%s-%d", dn.id, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.lastSeq)
		default:
			out.Append(dn.id, event(fmt.Sprintf("depfailed-%s-%d", dn.id, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.lastSeq)
		}
	}
	lim := m.limits()
	if blocked || len(down) <= lim.BatchOver {
		for _, d := range down {
			dn := &g.nodes[d]
			dn.doomed, dn.doomBlocked = n+1, blocked
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
		dn.doomed, dn.doomBlocked = n+1, false
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
		out.Append(rec.ID, &eventsv1.Event{Id: fmt.Sprintf("downstream-%s-%d", rec.ID, rec.Seq), CausationId: cause,
			Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: fact}}, g.nodes[n].lastSeq)
	}
}

// downstreamFailed folds a downstream_failed fact: each listed derivation
// takes the dependency_failed transition. Their own last sequence stays:
// the fact is not on their subjects, which is what their guards check.
func (m *Graph) downstreamFailed(rec eventlog.Record, ids []string, each *eventsv1.Event) {
	g := m.g
	for _, id := range ids {
		d, ok := g.lookup(id)
		if !ok || !g.nodes[d].discovered() {
			m.logger.Error().Str("drv", id).Uint64("seq", rec.Seq).Msg("downstream_failed names a derivation never discovered")
			continue
		}
		dn := &g.nodes[d]
		next, err := buildstate.Next(dn.drv, each)
		if err != nil {
			m.logger.Error().Err(err).Str("drv", id).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
			continue
		}
		dn.drv = next
		dn.doomed, dn.doomBlocked = 0, false
		g.touch(d)
	}
}
