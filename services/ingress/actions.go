package ingress

import (
	"bytes"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// The folds of actions someone asked for (libs/action decides them):
// a retried failure takes the derivations it failed with it, a cancelled
// jobset stops what only it needed, a restarted jobset queues again what
// it needs that failed or was interrupted.

// Values of the jobset_state bucket.
const (
	jobsetLive      = 'l'
	jobsetCancelled = 'c'
)

// failedKey is the failed bucket's key for transitive failure d of cause c.
func failedKey(c, d uint64) []byte { return blockedKey(c, d) }

// indexFailed keeps the failed bucket: an entry while n is a transitive
// failure, under its cause.
func (m *Graph) indexFailed(n int32, prev, next buildstate.Drv) error {
	g := m.g
	if prev.State == buildstate.TransitiveFailure && (next.State != buildstate.TransitiveFailure || next.Cause != prev.Cause) {
		if c, ok, err := g.storedKey(prev.Cause); err != nil || !ok {
			return err
		} else if err := g.tx.Bucket(failedBucket).Delete(failedKey(c, g.nodes[n].key)); err != nil {
			return err
		}
	}
	if next.State == buildstate.TransitiveFailure && (prev.State != buildstate.TransitiveFailure || next.Cause != prev.Cause) {
		c, ok, err := g.storedKey(next.Cause)
		if err != nil || !ok {
			return err
		}
		return g.tx.Bucket(failedBucket).Put(failedKey(c, g.nodes[n].key), nil)
	}
	return nil
}

// storedKey is id's discovered sequence, read from memory or bbolt
// without loading it.
func (g *graph) storedKey(id string) (uint64, bool, error) {
	if n, ok := g.num[id]; ok && g.nodes[n].key != 0 {
		return g.nodes[n].key, true, nil
	}
	k := g.tx.Bucket(idsBucket).Get([]byte(id))
	if len(k) != 8 {
		return 0, false, nil
	}
	return beUint64(k), true, nil
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

// failedRequeued lets the transitive failures of c follow it when c, a
// failure, was retried on purpose: each is queued again (cause-cleared)
// and waits for c's new attempt. Verdicts naming c still on their way are
// dropped, and cleared when they land (Apply's dependency_failed).
func (m *Graph) failedRequeued(rec eventlog.Record, c int32, out *projection.Decisions) error {
	g := m.g
	g.walk(c, func(d int32) bool {
		dn := &g.nodes[d]
		if dn.drv.State != buildstate.Queued || dn.doomed != c+1 || dn.doomBlocked {
			return false
		}
		g.clearDoomed(d)
		g.touch(d)
		return true
	})
	prefix := seqKey(g.nodes[c].key)
	var keys [][]byte
	cur := g.tx.Bucket(failedBucket).Cursor()
	for k, _ := cur.Seek(prefix); k != nil && len(k) == 16 && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		keys = append(keys, append([]byte(nil), k[8:]...))
	}
	causeID := g.nodes[c].id
	for _, k := range keys {
		v := g.tx.Bucket(nodesBucket).Get(k)
		if v == nil {
			return fmt.Errorf("transitive failure %x: not stored", k)
		}
		d, err := decode(v)
		if err != nil {
			return err
		}
		b, err := g.node(d.id)
		if err != nil {
			return err
		}
		if bn := &g.nodes[b]; bn.drv.State == buildstate.TransitiveFailure && bn.drv.Cause == causeID {
			m.requeue(b, eventlog.CauseClearedID, ReasonCauseCleared, rec.Event.GetId(), out)
		}
	}
	return nil
}

// retry appends the requeue of failed derivation n that actor asked for
// (by restarting a jobset that needs it).
func (m *Graph) retry(n int32, actor *eventsv1.Actor, cause string, out *projection.Decisions) {
	g := m.g
	nd := &g.nodes[n]
	if nd.asked {
		return
	}
	req, err := buildstate.DecideRetry(nd.drv, actor)
	if err != nil {
		m.logger.Error().Err(err).Str("drv", nd.id).Msg("cannot retry")
		return
	}
	out.Append(nd.id, event(eventlog.RetriedID(nd.id, req.GetNextAttempt()), cause, req), nd.lastSeq)
	nd.asked = true
	g.touch(n)
}

// jobsetIDs reads the derivation ids of every part of a jobset's
// attributes folded so far.
func (g *graph) jobsetIDs(jobsetID string) []string {
	prefix := append([]byte(jobsetID), 0)
	var ids []string
	cur := g.tx.Bucket(jobsetsBucket).Cursor()
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		if len(v) > 0 {
			ids = append(ids, strings.Split(string(v), "\n")...)
		}
	}
	return ids
}

// jobsetCancelled folds a jobset_cancelled: what its attributes need that
// is not settled, and that no other live jobset needs, is interrupted
// (cancelled). Parts listed later are cancelled as they come (listed).
func (m *Graph) jobsetCancelled(rec eventlog.Record, actor *eventsv1.Actor, out *projection.Decisions) error {
	g := m.g
	raw, err := proto.Marshal(actor)
	if err != nil {
		return err
	}
	if err := g.tx.Bucket(jobsetStateBucket).Put([]byte(rec.ID), append([]byte{jobsetCancelled}, raw...)); err != nil {
		return err
	}
	return m.cancel(rec, g.jobsetIDs(rec.ID), actor, out)
}

// unsettled: n is in memory and still on its way to a verdict.
func (g *graph) unsettled(id string) (int32, bool) {
	n, ok := g.lookup(id)
	if !ok || !g.nodes[n].discovered() || g.nodes[n].drv.State.Settled() {
		return 0, false
	}
	return n, true
}

// closure visits the unsettled closure of roots (every unsettled
// derivation is in memory with its inputs), each once, skipping what
// skip says.
func (g *graph) closure(roots []string, skip func(int32) bool, visit func(int32)) {
	var stack []int32
	for _, id := range roots {
		if n, ok := g.unsettled(id); ok {
			stack = append(stack, n)
		}
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !g.mark(n) || skip(n) {
			continue
		}
		visit(n)
		for _, in := range g.nodes[n].inputs {
			if g.nodes[in].discovered() && !g.nodes[in].drv.State.Settled() {
				stack = append(stack, in)
			}
		}
	}
}

// cancel interrupts (cancelled) the unsettled derivations roots need that
// no live jobset other than rec's needs.
func (m *Graph) cancel(rec eventlog.Record, roots []string, actor *eventsv1.Actor, out *projection.Decisions) error {
	g := m.g
	keep := map[int32]bool{}
	g.newGen()
	err := g.tx.Bucket(jobsetStateBucket).ForEach(func(k, v []byte) error {
		if string(k) == rec.ID || len(v) == 0 || v[0] != jobsetLive {
			return nil
		}
		g.closure(g.jobsetIDs(string(k)), func(int32) bool { return false }, func(n int32) { keep[n] = true })
		return nil
	})
	if err != nil {
		return err
	}
	detail := fmt.Sprintf("cancelled with jobset %s by %s (%s)", rec.ID, actor.GetWho(), actor.GetSource())
	if r := actor.GetReason(); r != "" {
		detail += ": " + r
	}
	g.newGen()
	g.closure(roots, func(n int32) bool { return keep[n] }, func(n int32) {
		nd := &g.nodes[n]
		switch nd.drv.State {
		case buildstate.Queued, buildstate.Buildable, buildstate.Building:
		default:
			return // FailedRetry: the recorder queues it again
		}
		out.Append(nd.id, event(eventlog.DrvCancelledID(nd.id, nd.lastSeq), rec.Event.GetId(), &eventsv1.DrvInterrupted{
			Kind: eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED, Attempt: nd.drv.Attempt, Detail: detail, Actor: actor,
		}), nd.lastSeq)
	})
	return nil
}

// cancelActor reads the actor of a cancel from a jobset_state value.
func cancelActor(v []byte) *eventsv1.Actor {
	a := &eventsv1.Actor{}
	if len(v) > 1 {
		_ = proto.Unmarshal(v[1:], a) // written by jobsetCancelled; a bad copy only loses the name
	}
	return a
}

// jobsetRestarted folds a jobset_restarted: the jobset is live again, and
// what its attributes need that failed, was interrupted or blocked is
// queued again, inputs first; transitive failures follow their causes.
func (m *Graph) jobsetRestarted(rec eventlog.Record, actor *eventsv1.Actor, out *projection.Decisions) error {
	g := m.g
	if err := g.tx.Bucket(jobsetStateBucket).Put([]byte(rec.ID), []byte{jobsetLive}); err != nil {
		return err
	}
	if actor == nil {
		actor = &eventsv1.Actor{}
	}
	g.newGen()
	for _, id := range g.jobsetIDs(rec.ID) {
		if err := m.need(rec, id, actor, out); err != nil {
			return err
		}
	}
	return nil
}
