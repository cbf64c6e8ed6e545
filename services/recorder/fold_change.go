package recorder

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

func (c *Conclusions) change(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	ch, err := getJSON[changeRow](tx, changesBucket, rec.ID)
	if err != nil {
		return err
	}
	if ch == nil {
		ch = &changeRow{Concluded: map[string]eventsv1.Conclusion{}}
	}
	if p, ok := rec.Event.GetPayload().(*eventsv1.Event_ChangeCancelled); ok {
		return c.changeCancelled(tx, rec, ch, p.ChangeCancelled, out)
	}
	if _, ok := rec.Event.GetPayload().(*eventsv1.Event_ChangeConcluded); ok {
		ch.Last, ch.Decided, ch.Done = rec.Seq, true, true
		if err := tx.Bucket(decidedBucket).Delete(decidedKey('c', rec.ID)); err != nil {
			return err
		}
		return putJSON(tx, changesBucket, rec.ID, ch)
	}
	// As for jobsets: a decision not yet in the log fails its guard now.
	pending := ch.Decided && !ch.Done
	ch.Last = rec.Seq
	if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
		return err
	}
	if pending {
		return c.redecide(tx, 'c', rec.ID, ch.Last, out)
	}
	conclude := func(conclusion eventsv1.Conclusion, summary string) error {
		return c.decideChange(tx, rec.ID, ch, rec, out, conclusion, summary)
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ChangeCheckoutFailed:
		if ch.Known {
			return nil
		}
		ch.Known = true
		return conclude(eventsv1.Conclusion_CONCLUSION_FAILURE, "checkout failed: "+p.ChangeCheckoutFailed.GetError())
	case *eventsv1.Event_ChangeConfigInvalid:
		if ch.Known {
			return nil
		}
		ch.Known = true
		return conclude(eventsv1.Conclusion_CONCLUSION_FAILURE, "invalid CI configuration: "+p.ChangeConfigInvalid.GetError())
	case *eventsv1.Event_ChangeConfigRead:
		if ch.Known {
			return nil
		}
		ch.Known = true
		if !p.ChangeConfigRead.GetConfigured() {
			return conclude(eventsv1.Conclusion_CONCLUSION_NEUTRAL, "no CI configured (.ekaci/config.json not found)")
		}
		ch.Expected = true
		ch.Jobsets, ch.Checks = nil, nil
		for _, job := range p.ChangeConfigRead.GetJobs() {
			ch.Jobsets = append(ch.Jobsets, eventlog.JobsetID(rec.ID, job))
		}
		for _, check := range p.ChangeConfigRead.GetChecks() {
			ch.Checks = append(ch.Checks, eventlog.CheckID(rec.ID, check))
		}
		if err := putJSON(tx, changesBucket, rec.ID, ch); err != nil {
			return err
		}
		return c.maybeConcludeChange(tx, rec.ID, ch, rec, out)
	}
	return nil
}

func (c *Conclusions) maybeConcludeChange(tx *bolt.Tx, changeID string, ch *changeRow, rec eventlog.Record, out *projection.Decisions) error {
	if ch.Decided || !ch.Expected {
		return nil
	}
	failed, cancelled := 0, 0
	for _, id := range ch.Jobsets {
		conclusion, ok := ch.Concluded[id]
		if !ok {
			return nil
		}
		switch conclusion {
		case eventsv1.Conclusion_CONCLUSION_FAILURE:
			failed++
		case eventsv1.Conclusion_CONCLUSION_CANCELLED:
			cancelled++
		}
	}
	checksFailed := 0
	for _, id := range ch.Checks {
		row, err := getJSON[checkRow](tx, checksBucket, id)
		if err != nil {
			return err
		}
		if row == nil {
			return nil
		}
		if row.Fails {
			checksFailed++
		}
	}
	conclusion := eventsv1.Conclusion_CONCLUSION_SUCCESS
	summary := fmt.Sprintf("%d of %d jobs failed", failed, len(ch.Jobsets))
	if len(ch.Checks) > 0 {
		summary += fmt.Sprintf(", %d of %d checks failed", checksFailed, len(ch.Checks))
	}
	switch {
	case failed > 0 || checksFailed > 0:
		conclusion = eventsv1.Conclusion_CONCLUSION_FAILURE
	case cancelled > 0:
		// Nothing failed, but not everything was built either.
		conclusion = eventsv1.Conclusion_CONCLUSION_CANCELLED
		summary = fmt.Sprintf("%d of %d jobs cancelled, none failed", cancelled, len(ch.Jobsets))
	}
	return c.decideChange(tx, changeID, ch, rec, out, conclusion, summary)
}

// decideChange decides a change's conclusion, once.
func (c *Conclusions) decideChange(tx *bolt.Tx, changeID string, ch *changeRow, rec eventlog.Record, out *projection.Decisions, conclusion eventsv1.Conclusion, summary string) error {
	if ch.Decided {
		return nil
	}
	ch.Decided = true
	if err := putJSON(tx, changesBucket, changeID, ch); err != nil {
		return err
	}
	id := eventlog.ConcludedID(changeID)
	if ch.Round > 0 {
		id = eventlog.ConcludedAgainID(changeID, ch.Round)
	}
	return c.decide(tx, 'c', changeID, &eventsv1.Event{
		Id: id, CausationId: rec.Event.GetId(), CorrelationId: changeID,
		Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{
			Conclusion: conclusion, Summary: summary, JobsetIds: ch.Jobsets, CheckIds: ch.Checks,
		}},
	}, ch.Last, out)
}
