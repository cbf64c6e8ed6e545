package recorder

import (
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// check folds the end of a check into its change: a check that did not
// pass fails the change, unless the base did not pass it either (the
// checker ran it there and says so in the fact).
func (c *Conclusions) check(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	var changeID string
	var fails bool
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_CheckSucceeded:
		changeID = p.CheckSucceeded.GetChangeId()
	case *eventsv1.Event_CheckFailed:
		changeID, fails = p.CheckFailed.GetChangeId(), !p.CheckFailed.GetBaseFailed()
	case *eventsv1.Event_CheckInterrupted:
		changeID, fails = p.CheckInterrupted.GetChangeId(), !p.CheckInterrupted.GetBaseFailed()
	default:
		return nil
	}
	row, err := getJSON[checkRow](tx, checksBucket, rec.ID)
	if err != nil || row != nil {
		return err // a check ends once: a repeat changes nothing
	}
	if err := putJSON(tx, checksBucket, rec.ID, &checkRow{Fails: fails}); err != nil {
		return err
	}
	ch, err := getJSON[changeRow](tx, changesBucket, changeID)
	if err != nil || ch == nil {
		// Its change's config_read is not folded yet: it reads this row
		// when it is.
		return err
	}
	return c.maybeConcludeChange(tx, changeID, ch, rec, out)
}
