package recorder

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// The folds of actions someone asked for (libs/action decides them).

// by is "who (source): reason" for a summary.
func by(a *eventsv1.Actor) string {
	s := fmt.Sprintf("%s (%s)", a.GetWho(), a.GetSource())
	if r := a.GetReason(); r != "" {
		s += ": " + r
	}
	return s
}

// changeCancelled folds a change_cancelled: the change concludes cancelled
// at once (its jobsets' own jobset_cancelled follow from the decider).
func (c *Conclusions) changeCancelled(tx *bolt.Tx, rec eventlog.Record, ch *changeRow, p *eventsv1.ChangeCancelled, out *projection.Decisions) error {
	pending := ch.Decided && !ch.Done
	ch.Last = rec.Seq
	if ch.Cancelled || ch.Decided {
		// A repeat, or a change that concluded before the cancel landed.
		if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
			return err
		}
		if pending {
			return c.redecide(tx, 'c', rec.ID, ch.Last, out)
		}
		return nil
	}
	ch.Cancelled = true
	return c.decideChange(tx, rec.ID, ch, rec, out, eventsv1.Conclusion_CONCLUSION_CANCELLED, "cancelled by "+by(p.GetActor()))
}

// jobsetCancelled folds a jobset_cancelled: the jobset concludes cancelled
// as soon as its evaluation is recorded (at once when it is, or when the
// jobset was never created: its creation can no longer land).
func (c *Conclusions) jobsetCancelled(tx *bolt.Tx, rec eventlog.Record, js *jobsetRow, p *eventsv1.JobsetCancelled, out *projection.Decisions) error {
	if js == nil {
		js = &jobsetRow{ChangeID: p.GetChangeId()}
	}
	pending := js.Decided && !js.Concluded
	js.Last = rec.Seq
	if js.Cancelled || js.Decided {
		if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
			return err
		}
		if pending {
			return c.redecide(tx, 'j', rec.ID, js.Last, out)
		}
		return nil
	}
	js.Cancelled = true
	if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
		return err
	}
	if js.Job == "" && !js.Evaluated {
		return c.decideJobset(tx, rec.ID, js, rec, out, eventsv1.Conclusion_CONCLUSION_CANCELLED, nil, 0, nil)
	}
	return c.maybeConclude(tx, rec.ID, js, rec, out)
}

// jobsetRestarted folds a jobset_restarted: a concluded jobset is open
// again. Its derivations are watched afresh; those ingress queues again
// for it (failed, interrupted, blocked, and the transitive failures that
// follow their cause) count as unsettled until their next fact; its
// change, concluded or not, waits for its new conclusion.
func (c *Conclusions) jobsetRestarted(tx *bolt.Tx, rec eventlog.Record, js *jobsetRow, p *eventsv1.JobsetRestarted, out *projection.Decisions) error {
	if js == nil || !js.Concluded || p.GetRound() <= js.Round {
		// Not concluded (the decider refuses that), or a repeat.
		if js != nil {
			js.Last = rec.Seq
			return putJSON(tx, jobsetsBucket, rec.ID, js)
		}
		return nil
	}
	js.Last, js.Round = rec.Seq, p.GetRound()
	js.Decided, js.Concluded, js.Cancelled = false, false, false
	if err := c.rewatch(tx, rec.ID, js); err != nil {
		return err
	}
	if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
		return err
	}
	ch, err := getJSON[changeRow](tx, changesBucket, js.ChangeID)
	if err != nil {
		return err
	}
	if ch != nil {
		delete(ch.Concluded, rec.ID)
		if ch.Decided {
			ch.Decided, ch.Done, ch.Round = false, false, ch.Round+1
			if err := tx.Bucket(decidedBucket).Delete(decidedKey('c', js.ChangeID)); err != nil {
				return err
			}
		}
		ch.Cancelled = false
		if err := putJSON(tx, changesBucket, js.ChangeID, ch); err != nil {
			return err
		}
	}
	return c.maybeConclude(tx, rec.ID, js, rec, out)
}

// rewatch is evaluated's watch for a jobset open again: a derivation that
// ingress queues again for it awaits that requeue.
func (c *Conclusions) rewatch(tx *bolt.Tx, jobsetID string, js *jobsetRow) error {
	js.Unsettled = 0
	per := map[string]uint32{}
	var order []string
	err := eachAttr(tx, jobsetID, func(a *eventsv1.JobAttr) error {
		if id := a.GetDrvId(); id != "" {
			if per[id] == 0 {
				order = append(order, id)
			}
			per[id]++
		}
		return nil
	})
	if err != nil {
		return err
	}
	b := tx.Bucket(watchBucket)
	for _, id := range order {
		row, ok, err := c.drvs.lookup(tx, id, true)
		if err != nil {
			return err
		}
		again := ok && (row.Drv.State.NeededAgain() || row.Drv.State == buildstate.Failed || row.Drv.State == buildstate.TransitiveFailure)
		w := watchEntry{attrs: per[id], awaiting: again}
		if !ok || !row.Drv.State.Settled() || again {
			js.Unsettled += int(w.attrs)
		}
		key := watchKey(id, jobsetID)
		if old := b.Get(key); old == nil {
			c.watched[id]++
		} else if ow, err := decodeWatch(old); err != nil {
			return err
		} else if ow.awaiting {
			c.unawait(id)
		}
		if w.awaiting {
			c.awaiting[id]++
		}
		if err := b.Put(key, w.encode()); err != nil {
			return err
		}
	}
	return nil
}
