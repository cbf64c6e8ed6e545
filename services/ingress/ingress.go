package ingress

import (
	"context"
	"fmt"
	"path/filepath"

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
}

// Run keeps the graph model and decides until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	db, err := projection.Open(filepath.Join(cfg.DataDir, "ingress.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	opts := []projection.Option{projection.WithLogger(cfg.Logger)}
	if cfg.Applied != nil {
		opts = append(opts, projection.WithAppliedHook(cfg.Applied))
	}
	r, err := projection.New(db, cfg.Log, NewGraph(cfg.Logger), opts...)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Graph is the ingress read model and its decisions.
type Graph struct {
	logger zerolog.Logger
	index  *graphIndex
	batch  *batch
}

// NewGraph returns the model, for tests and tools that drive a Runner.
func NewGraph(logger zerolog.Logger) *Graph { return &Graph{logger: logger} }

// Name implements projection.Handler.
func (*Graph) Name() string { return "ingress" }

// Filters implements projection.Handler.
func (*Graph) Filters() []string { return []string{eventlog.KindFilter(eventlog.Drv)} }

// Init implements projection.Handler: it makes the buckets and rebuilds
// the in-memory dependents index from the stored derivations.
func (g *Graph) Init(tx *bolt.Tx) error {
	for _, b := range [][]byte{nodesBucket, infosBucket} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	g.index, g.batch = newIndex(), newBatch()
	return g.index.load(tx)
}

// Flush implements projection.Flusher: the batch's node changes are
// written before its transaction commits.
func (g *Graph) Flush(tx *bolt.Tx) error { return g.batch.flush(tx) }

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
func (g *Graph) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	n, err := g.batch.get(tx, rec.ID)
	if err != nil {
		return err
	}
	if n == nil {
		n = &node{}
	}
	next, err := buildstate.Next(n.Drv, rec.Event)
	if err != nil {
		// Deciders check before appending, so this is a bug elsewhere;
		// stopping the graph for every other derivation would be worse.
		g.logger.Error().Err(err).Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	n.Drv, n.LastSeq = next, rec.Seq
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		return g.discovered(tx, rec, n, p.DrvDiscovered, out)
	case *eventsv1.Event_DrvBuildSucceeded:
		g.batch.put(rec.ID, n)
		return g.succeeded(tx, rec, out)
	case *eventsv1.Event_DrvBuildFailed:
		g.batch.put(rec.ID, n)
		return g.propagate(tx, rec, out, false)
	case *eventsv1.Event_DrvInterrupted:
		g.batch.put(rec.ID, n)
		return g.propagate(tx, rec, out, true)
	case *eventsv1.Event_DrvDependencyFailed, *eventsv1.Event_DrvBlocked:
		n.Doomed, n.DoomBlocked = "", false
		g.batch.put(rec.ID, n)
		// Its cause may have succeeded (a retry, a later change) while
		// this verdict was on its way: clear it at once.
		causeID := rec.Event.GetDrvDependencyFailed().GetCauseDrvId()
		if causeID == "" {
			causeID = rec.Event.GetDrvBlocked().GetCauseDrvId()
		}
		cn, err := g.batch.get(tx, causeID)
		if err != nil {
			return err
		}
		if cn != nil && cn.Drv.State == buildstate.Succeeded {
			out.Append(rec.ID, event(fmt.Sprintf("cleared-%s-%d", rec.ID, rec.Seq), rec.Event.GetId(), &eventsv1.DrvRequeued{Reason: "cause-cleared", NextAttempt: n.Drv.Attempt + 1}), n.LastSeq)
		}
		return nil
	case *eventsv1.Event_DrvRequeued:
		g.batch.put(rec.ID, n)
		return g.maybeBuildable(tx, rec.ID, n, rec.Event.GetId(), out)
	default:
		g.batch.put(rec.ID, n)
		return nil
	}
}

func (g *Graph) discovered(tx *bolt.Tx, rec eventlog.Record, n *node, d *eventsv1.DrvDiscovered, out *projection.Outbox) error {
	if err := putInfo(tx, rec.ID, d); err != nil {
		return err
	}
	g.index.addInputs(rec.ID, d.GetInputDrvs())
	var failedCause, blockedCause *node
	var failedID, blockedID string
	for _, dep := range d.GetInputDrvs() {
		dn, err := g.batch.get(tx, dep)
		if err != nil {
			return err
		}
		if dn == nil {
			// The evaluator appends inputs before their dependents; a
			// missing one is counted as unfinished and logged.
			g.logger.Warn().Str("drv", rec.ID).Str("dep", dep).Msg("dependency not yet discovered")
			n.Pending++
			continue
		}
		if dn.Drv.State == buildstate.Succeeded {
			continue
		}
		n.Pending++
		switch {
		case dn.Drv.State == buildstate.Queued && dn.Doomed != "" && !dn.DoomBlocked:
			failedCause, failedID = dn, dn.Doomed
		case dn.Drv.State == buildstate.Queued && dn.Doomed != "":
			blockedCause, blockedID = dn, dn.Doomed
		}
		switch dn.Drv.State {
		case buildstate.Failed:
			failedCause, failedID = dn, dep
		case buildstate.TransitiveFailure:
			failedCause, failedID = dn, dn.Drv.Cause
		case buildstate.Interrupted:
			blockedCause, blockedID = dn, dep
		case buildstate.Blocked:
			blockedCause, blockedID = dn, dn.Drv.Cause
		}
	}
	// A verdict inherited here is on its way too: dependents discovered
	// before it lands inherit it from this node.
	switch {
	case d.GetOutputsValid():
	case failedCause != nil:
		n.Doomed, n.DoomBlocked = failedID, false
	case blockedCause != nil:
		n.Doomed, n.DoomBlocked = blockedID, true
	}
	g.batch.put(rec.ID, n)
	cause := rec.Event.GetId()
	switch {
	case d.GetOutputsValid():
		out.Append(rec.ID, event("cached-"+rec.ID, cause, &eventsv1.DrvBuildSucceeded{Cached: true}), rec.Seq)
	case failedCause != nil:
		out.Append(rec.ID, event(fmt.Sprintf("depfailed-%s-%d", rec.ID, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: failedID, CauseDrvPath: pathOf(tx, failedID)}), rec.Seq)
	case blockedCause != nil:
		out.Append(rec.ID, event(fmt.Sprintf("blocked-%s-%d", rec.ID, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: blockedID, CauseDrvPath: pathOf(tx, blockedID)}), rec.Seq)
	default:
		return g.maybeBuildableWith(rec.ID, n, cause, d, out)
	}
	return nil
}

func pathOf(tx *bolt.Tx, id string) string {
	d, err := getInfo(tx, id)
	if err != nil || d == nil {
		return ""
	}
	return d.GetDrvPath()
}

func (g *Graph) maybeBuildable(tx *bolt.Tx, id string, n *node, cause string, out *projection.Outbox) error {
	if n.Drv.State != buildstate.Queued || n.Pending > 0 {
		return nil
	}
	d, err := getInfo(tx, id)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("derivation %s is queued but was never discovered", id)
	}
	return g.maybeBuildableWith(id, n, cause, d, out)
}

func (g *Graph) maybeBuildableWith(id string, n *node, cause string, d *eventsv1.DrvDiscovered, out *projection.Outbox) error {
	if n.Drv.State != buildstate.Queued || n.Pending > 0 {
		return nil
	}
	b, err := buildstate.DecideBuildable(n.Drv, n.Pending, d)
	if err != nil {
		return err
	}
	out.Append(id, event(fmt.Sprintf("buildable-%s-%d", id, b.GetAttempt()), cause, b), n.LastSeq)
	return nil
}

// succeeded counts the success in every direct dependent, makes the ones
// with nothing left Buildable, and re-queues what this derivation had
// failed or blocked before it succeeded.
func (g *Graph) succeeded(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox) error {
	cause := rec.Event.GetId()
	for _, dep := range g.index.dependentsOf(rec.ID) {
		dn, err := g.batch.get(tx, dep)
		if err != nil || dn == nil {
			return err
		}
		if dn.Pending > 0 {
			dn.Pending--
		}
		g.batch.put(dep, dn)
		if err := g.maybeBuildable(tx, dep, dn, cause, out); err != nil {
			return err
		}
	}
	return g.walk(tx, rec.ID, func(id string, dn *node) bool {
		s := dn.Drv.State
		if s == buildstate.Queued && dn.Doomed == rec.ID {
			dn.Doomed, dn.DoomBlocked = "", false
			g.batch.put(id, dn)
			return true
		}
		if (s != buildstate.TransitiveFailure && s != buildstate.Blocked) || dn.Drv.Cause != rec.ID {
			return false
		}
		out.Append(id, event(fmt.Sprintf("cleared-%s-%d", id, rec.Seq), cause, &eventsv1.DrvRequeued{Reason: "cause-cleared", NextAttempt: dn.Drv.Attempt + 1}), dn.LastSeq)
		return true
	})
}

// propagate marks every Queued derivation downstream of a failed (or
// interrupted) one as TransitiveFailure (or Blocked), naming it as cause.
func (g *Graph) propagate(tx *bolt.Tx, rec eventlog.Record, out *projection.Outbox, blocked bool) error {
	path := pathOf(tx, rec.ID)
	cause := rec.Event.GetId()
	return g.walk(tx, rec.ID, func(id string, dn *node) bool {
		if dn.Drv.State != buildstate.Queued {
			return false
		}
		dn.Doomed, dn.DoomBlocked = rec.ID, blocked
		g.batch.put(id, dn)
		switch {
		case blocked:
			out.Append(id, event(fmt.Sprintf("blocked-%s-%d", id, rec.Seq), cause, &eventsv1.DrvBlocked{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.LastSeq)
		default:
			out.Append(id, event(fmt.Sprintf("depfailed-%s-%d", id, rec.Seq), cause, &eventsv1.DrvDependencyFailed{CauseDrvId: rec.ID, CauseDrvPath: path}), dn.LastSeq)
		}
		return true
	})
}

// walk visits the transitive dependents of root breadth-first, each once,
// descending only through those visit accepts.
func (g *Graph) walk(tx *bolt.Tx, root string, visit func(id string, n *node) bool) error {
	seen := map[string]bool{root: true}
	queue := []string{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, dep := range g.index.dependentsOf(cur) {
			if seen[dep] {
				continue
			}
			seen[dep] = true
			dn, err := g.batch.get(tx, dep)
			if err != nil {
				return err
			}
			if dn != nil && visit(dep, dn) {
				queue = append(queue, dep)
			}
		}
	}
	return nil
}
