package recorder

import (
	"bytes"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// drv folds one derivation fact. A batched fact arrives as itself on the
// failed derivation, then as the dependency_failed of each derivation it
// lists (eventlog.Record.Transitions, applied one by one by the runner).
func (c *Conclusions) drv(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	return c.fold(tx, rec.ID, rec.Event, rec, out)
}

// fold applies ev to derivation id's row; rec is the fact it came in.
func (c *Conclusions) fold(tx *bolt.Tx, id string, ev *eventsv1.Event, rec eventlog.Record, out *projection.Decisions) error {
	// A discovered fact is its aggregate's first (the evaluator appends it
	// expecting no history): no settled row is looked up for it.
	_, first := ev.GetPayload().(*eventsv1.Event_DrvDiscovered)
	row, found, err := c.drvs.lookup(tx, id, !first)
	if err != nil {
		return err
	}
	next, err := buildstate.Next(row.Drv, ev)
	if err != nil {
		c.logger.Error().Err(err).Str("drv", id).Uint64("seq", rec.Seq).Msg("refusing an illegal fact found in the log")
		return nil
	}
	if !found {
		// Cloned: rec.ID is a slice of the subject, which the row would
		// otherwise keep alive.
		row.ID, row.Key = strings.Clone(id), rec.Seq
	}
	wasSettled := row.Drv.State.Settled()
	row.Drv = next
	switch p := ev.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		row.Path = p.DrvDiscovered.GetDrvPath()
	case *eventsv1.Event_DrvBuildSucceeded:
		row.Millis, row.Detail, row.Cause = p.DrvBuildSucceeded.GetDurationMs(), "", ""
	case *eventsv1.Event_DrvBuildFailed:
		row.Millis, row.Detail = p.DrvBuildFailed.GetDurationMs(), p.DrvBuildFailed.GetLogTail()
	case *eventsv1.Event_DrvBuildFailedRetry:
		row.Millis, row.Detail = p.DrvBuildFailedRetry.GetDurationMs(), p.DrvBuildFailedRetry.GetLogTail()
	case *eventsv1.Event_DrvInterrupted:
		row.Detail = p.DrvInterrupted.GetDetail()
	case *eventsv1.Event_DrvDependencyFailed:
		row.Cause = p.DrvDependencyFailed.GetCauseDrvPath()
	case *eventsv1.Event_DrvBlocked:
		row.Cause = p.DrvBlocked.GetCauseDrvPath()
	case *eventsv1.Event_DrvRequeued:
		// Queued again (a retry, a cleared cause, needed again by a later
		// jobset): what it settled as before no longer holds.
		row.Detail, row.Cause = "", ""
	}
	settled := next.State.Settled()
	switch {
	case settled && !wasSettled:
		row.SettledAt = rec.Seq
	case !settled:
		row.SettledAt = 0
	}
	c.drvs.put(row)
	if c.watched[id] == 0 || (settled == wasSettled && c.awaiting[id] == 0) {
		return nil // no jobset not yet concluded waits for it
	}
	// Every watcher counts the derivation unsettled exactly while it is
	// (set so when the jobset was evaluated, moved at each transition
	// since), so a transition moves each by its attributes, once. One
	// awaiting its needed-again re-queue counted it unsettled already: the
	// re-queue changes nothing for it, any other fact (the re-queue did
	// not come) counts it as that fact leaves it.
	type move struct {
		jobset string
		delta  int
		clear  bool // the entry awaits no more
	}
	var moves []move
	cur := tx.Bucket(watchBucket).Cursor()
	prefix := watchKey(id, "")
	for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
		w, err := decodeWatch(v)
		if err != nil {
			return err
		}
		m := move{jobset: string(k[len(prefix):]), clear: w.awaiting}
		switch {
		case w.awaiting && settled:
			m.delta = -int(w.attrs)
		case w.awaiting:
		case settled && !wasSettled:
			m.delta = -int(w.attrs)
		case !settled && wasSettled:
			m.delta = int(w.attrs)
		}
		if m.delta != 0 || m.clear {
			moves = append(moves, m)
		}
	}
	var touched []string
	for _, m := range moves {
		if m.clear {
			v := tx.Bucket(watchBucket).Get(watchKey(id, m.jobset))
			w, err := decodeWatch(v)
			if err != nil {
				return err
			}
			w.awaiting = false
			if err := tx.Bucket(watchBucket).Put(watchKey(id, m.jobset), w.encode()); err != nil {
				return err
			}
			c.unawait(id)
		}
		if m.delta == 0 {
			continue
		}
		js, err := getJSON[jobsetRow](tx, jobsetsBucket, m.jobset)
		if err != nil || js == nil {
			return err
		}
		js.Unsettled += m.delta
		if err := putJSON(tx, jobsetsBucket, m.jobset, js); err != nil {
			return err
		}
		if m.delta < 0 {
			touched = append(touched, m.jobset)
		}
	}
	for _, jobsetID := range touched {
		js, err := getJSON[jobsetRow](tx, jobsetsBucket, jobsetID)
		if err != nil {
			return err
		}
		if err := c.maybeConclude(tx, jobsetID, js, rec, out); err != nil {
			return err
		}
	}
	return nil
}
