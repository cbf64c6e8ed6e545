package projection

import eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"

// Decisions collects the events one batch's folds decided to append. It lives
// in memory only: the runner appends them right after the batch, before
// the checkpoint that covers it (see Handler.Apply), so a crash in between
// folds the batch again and decides them again; nothing is kept in the
// file.
type Decisions struct{ entries []outEntry }

type outEntry struct {
	ID     string
	Event  *eventsv1.Event
	Expect bool
	Seq    uint64
}

// Append queues ev for aggregate id, guarded by the aggregate's last
// sequence as the fold knows it (0: the aggregate must be new).
func (o *Decisions) Append(id string, ev *eventsv1.Event, expectLast uint64) {
	o.entries = append(o.entries, outEntry{ID: id, Event: ev, Expect: true, Seq: expectLast})
}

// Len is how many events are queued.
func (o *Decisions) Len() int { return len(o.entries) }

// Event is the i-th queued event, for tests of a fold's decisions.
func (o *Decisions) Event(i int) *eventsv1.Event { return o.entries[i].Event }

// AppendUnguarded queues ev without an expected-sequence guard, for facts
// on aggregates the fold does not track. Beware: a rebuilt read model
// replays the fold, and an unguarded event older than the duplicate window
// is then appended again; prefer Append with the aggregate's last sequence.
func (o *Decisions) AppendUnguarded(id string, ev *eventsv1.Event) {
	o.entries = append(o.entries, outEntry{ID: id, Event: ev})
}
