package recorder

import (
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

func (c *Conclusions) jobset(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	js, err := getJSON[jobsetRow](tx, jobsetsBucket, rec.ID)
	if err != nil {
		return err
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_JobsetConcluded:
		return c.jobsetConcluded(tx, rec, js, p.JobsetConcluded, out)
	case *eventsv1.Event_JobsetCancelled:
		return c.jobsetCancelled(tx, rec, js, p.JobsetCancelled, out)
	case *eventsv1.Event_JobsetRestarted:
		return c.jobsetRestarted(tx, rec, js, p.JobsetRestarted, out)
	}
	// A conclusion decided but not yet in the log was decided expecting
	// the jobset's last event before this one: its guard fails now, so it
	// is appended again behind this fact.
	pending := js != nil && js.Decided && !js.Concluded
	if js != nil {
		js.Last = rec.Seq
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_JobsetCreated:
		if js == nil {
			js = &jobsetRow{ChangeID: p.JobsetCreated.GetChangeId(), Last: rec.Seq}
		}
		if js.Job == "" {
			// An evaluation folded before the jobset's creation named no job.
			js.Job = p.JobsetCreated.GetJob()
		}
	case *eventsv1.Event_JobsetAttrsListed:
		if js == nil || !js.Evaluated {
			if err := putAttrs(tx, rec.ID, p.JobsetAttrsListed.GetPart(), p.JobsetAttrsListed.GetAttrs()); err != nil {
				return err
			}
		}
	case *eventsv1.Event_JobsetEvaluated:
		if js == nil {
			js = &jobsetRow{ChangeID: p.JobsetEvaluated.GetChangeId(), Last: rec.Seq}
		}
		if !js.Evaluated {
			js.Evaluated, js.EvaluatedAt = true, rec.Seq
			if err := c.evaluated(tx, rec.ID, js, p.JobsetEvaluated); err != nil {
				return err
			}
			if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
				return err
			}
			return c.maybeConclude(tx, rec.ID, js, rec, out)
		}
	case *eventsv1.Event_JobsetEvalFailed:
		if js == nil {
			js = &jobsetRow{ChangeID: p.JobsetEvalFailed.GetChangeId(), Last: rec.Seq}
		}
		if !js.Evaluated && !js.Decided {
			js.Evaluated = true
			if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
				return err
			}
			conclusion := eventsv1.Conclusion_CONCLUSION_FAILURE
			if js.Cancelled {
				conclusion = eventsv1.Conclusion_CONCLUSION_CANCELLED
			}
			return c.decideJobset(tx, rec.ID, js, rec, out, conclusion,
				[]*eventsv1.AttrResult{{State: ResultEvalError, Error: p.JobsetEvalFailed.GetError()}}, 0, nil)
		}
	}
	if js == nil {
		return nil
	}
	if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
		return err
	}
	if pending {
		return c.redecide(tx, 'j', rec.ID, js.Last, out)
	}
	return nil
}

// evaluated folds a jobset's (first) evaluation: its last part of
// attributes, a watch entry per derivation (set, not added to), and how
// many attributes wait for a derivation not yet settled.
func (c *Conclusions) evaluated(tx *bolt.Tx, jobsetID string, js *jobsetRow, ev *eventsv1.JobsetEvaluated) error {
	// The last part: the attributes of jobset_attrs_listed parts (if
	// any) are stored already.
	if err := putAttrs(tx, jobsetID, ev.GetAttrParts(), ev.GetAttrs()); err != nil {
		return err
	}
	js.Attrs, js.Unsettled = 0, 0
	per := map[string]uint32{}
	var order []string
	err := eachAttr(tx, jobsetID, func(a *eventsv1.JobAttr) error {
		js.Attrs++
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
	if want := ev.GetAttrCount(); want != 0 && uint32(js.Attrs) != want {
		c.logger.Error().Str("jobset", jobsetID).Int("stored", js.Attrs).Uint32("listed", want).Msg("a part of the jobset's attributes is missing from the log")
	}
	b := tx.Bucket(watchBucket)
	for _, id := range order {
		row, ok, err := c.drvs.lookup(tx, id, true)
		if err != nil {
			return err
		}
		w := watchEntry{attrs: per[id], awaiting: ok && row.Drv.State.NeededAgain()}
		if !ok || !row.Drv.State.Settled() || w.awaiting {
			js.Unsettled += int(w.attrs)
		}
		key := watchKey(id, jobsetID)
		if old := b.Get(key); old == nil {
			c.watched[strings.Clone(id)]++
		} else if ow, err := decodeWatch(old); err != nil {
			return err
		} else if ow.awaiting {
			c.unawait(id)
		}
		if w.awaiting {
			c.awaiting[strings.Clone(id)]++
		}
		if err := b.Put(key, w.encode()); err != nil {
			return err
		}
	}
	return nil
}

// unwatch removes a concluded jobset's watch entries: its derivations'
// later transitions concern it no more.
func (c *Conclusions) unwatch(tx *bolt.Tx, jobsetID string) error {
	b := tx.Bucket(watchBucket)
	return eachAttr(tx, jobsetID, func(a *eventsv1.JobAttr) error {
		id := a.GetDrvId()
		if id == "" {
			return nil
		}
		key := watchKey(id, jobsetID)
		v := b.Get(key)
		if v == nil {
			return nil // a second attribute of the same derivation
		}
		if w, err := decodeWatch(v); err != nil {
			return err
		} else if w.awaiting {
			c.unawait(id)
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		if n := c.watched[id]; n <= 1 {
			delete(c.watched, id)
		} else {
			c.watched[id] = n - 1
		}
		return nil
	})
}

// unawait counts one watch entry of id fewer awaiting its re-queue.
func (c *Conclusions) unawait(id string) {
	if n := c.awaiting[id]; n <= 1 {
		delete(c.awaiting, id)
	} else {
		c.awaiting[id] = n - 1
	}
}

// jobsetConcluded folds a jobset's conclusion: final for the jobset, and
// counted for its change once.
func (c *Conclusions) jobsetConcluded(tx *bolt.Tx, rec eventlog.Record, js *jobsetRow, p *eventsv1.JobsetConcluded, out *projection.Decisions) error {
	if js != nil {
		js.Last, js.Decided, js.Concluded = rec.Seq, true, true
		if err := putJSON(tx, jobsetsBucket, rec.ID, js); err != nil {
			return err
		}
	}
	if err := tx.Bucket(decidedBucket).Delete(decidedKey('j', rec.ID)); err != nil {
		return err
	}
	changeID := p.GetChangeId()
	ch, err := getJSON[changeRow](tx, changesBucket, changeID)
	if err != nil {
		return err
	}
	if ch == nil {
		ch = &changeRow{}
	}
	if ch.Concluded == nil {
		ch.Concluded = map[string]eventsv1.Conclusion{}
	}
	if _, seen := ch.Concluded[rec.ID]; seen {
		return nil // the first conclusion counts
	}
	ch.Concluded[rec.ID] = p.GetConclusion()
	if err := putJSON(tx, changesBucket, changeID, ch); err != nil {
		return err
	}
	return c.maybeConcludeChange(tx, changeID, ch, rec, out)
}

// decideJobset decides a jobset's conclusion, once.
func (c *Conclusions) decideJobset(tx *bolt.Tx, jobsetID string, js *jobsetRow, rec eventlog.Record, out *projection.Decisions,
	conclusion eventsv1.Conclusion, results []*eventsv1.AttrResult, omitted uint32, counts map[string]uint32) error {
	if js.Decided {
		return nil
	}
	js.Decided, js.Conclusion = true, conclusion
	if err := putJSON(tx, jobsetsBucket, jobsetID, js); err != nil {
		return err
	}
	id := eventlog.ConcludedID(jobsetID)
	if js.Round > 0 {
		id = eventlog.ConcludedAgainID(jobsetID, js.Round)
	}
	return c.decide(tx, 'j', jobsetID, &eventsv1.Event{
		Id: id, CausationId: rec.Event.GetId(), CorrelationId: js.ChangeID,
		Payload: &eventsv1.Event_JobsetConcluded{JobsetConcluded: &eventsv1.JobsetConcluded{
			ChangeId: js.ChangeID, Job: js.Job, Conclusion: conclusion, Results: results,
			ResultsOmitted: omitted, Counts: counts,
		}},
	}, js.Last, out)
}
