package recorder

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

func TestRowEncodingRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		row  drvRow
	}{
		{"discovered", drvRow{ID: did("a"), Drv: buildstate.Drv{State: buildstate.Queued, Events: 1}, Path: "/nix/store/" + did("a") + "-a.drv"}},
		{"succeeded", drvRow{ID: did("b"), Drv: buildstate.Drv{State: buildstate.Succeeded, Attempt: 1, Events: 4}, Path: "/nix/store/b.drv", Millis: 35}},
		{"every field", drvRow{ID: did("c"), Drv: buildstate.Drv{
			State: buildstate.Interrupted, Attempt: 1<<32 - 1, RetryUsed: true, Cached: true,
			Interruption: eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT, Cause: did("d"), Events: 1 << 40,
		}, Path: "/nix/store/c.drv", Detail: "boom\n\x00é", Cause: "/nix/store/d.drv", Millis: -1}},
		{"cached", drvRow{ID: "x", Drv: buildstate.Drv{State: buildstate.Succeeded, Cached: true, Events: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := appendRow(nil, &tt.row)
			if again := appendRow([]byte("prefix"), &tt.row); !bytes.Equal(again[len("prefix"):], enc) {
				t.Fatalf("appendRow is not deterministic: %x then %x", enc, again)
			}
			got, err := decodeRow(enc)
			if err != nil {
				t.Fatalf("decodeRow(%x): %v", enc, err)
			}
			if got != tt.row {
				t.Fatalf("decodeRow(appendRow(r)) = %+v, want %+v", got, tt.row)
			}
			for n := range len(enc) {
				if _, err := decodeRow(enc[:n]); err == nil {
					t.Errorf("decodeRow(first %d of %d bytes) = nil error", n, len(enc))
				}
			}
			if _, err := decodeRow(append(enc, 0)); !errors.Is(err, errBadRow) {
				t.Errorf("decodeRow(with a trailing byte) = %v, want %v", err, errBadRow)
			}
		})
	}
}

func drvRec(seq uint64, id string, ev *eventsv1.Event) eventlog.Record {
	kind, _ := buildstate.KindOf(ev)
	return eventlog.Record{Seq: seq, Aggregate: eventlog.Drv, ID: id, Fact: string(kind), Event: ev}
}

// TestUncommittedBatchIsFoldedAgain: memory runs ahead of the file while a
// batch is folded; when the batch's transaction does not commit, the next
// batch folds its events again from what the file holds.
func TestUncommittedBatchIsFoldedAgain(t *testing.T) {
	db := projectiontest.OpenDB(t, "recorder.db")
	c := NewConclusions(zerolog.Nop())
	if err := db.Update(c.Init); err != nil {
		t.Fatal(err)
	}
	id := did("a")
	disc := drvRec(7, id, &eventsv1.Event{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/a.drv"}}})
	boom := errors.New("boom")
	err := db.Update(func(tx *bolt.Tx) error {
		if err := c.Apply(tx, disc, &projection.Decisions{}); err != nil {
			return err
		}
		if err := c.Flush(tx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want %v", err, boom)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := c.Apply(tx, disc, &projection.Decisions{}); err != nil {
			return err
		}
		return c.Flush(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(drvsBucket).Get([]byte{0, 0, 0, 0, 0, 0, 0, 7})
		if v == nil {
			t.Fatal("no row under the discovered sequence")
		}
		r, err := decodeRow(v)
		if err != nil {
			return err
		}
		if r.ID != id || r.Drv.State != buildstate.Queued || r.Drv.Events != 1 {
			t.Errorf("stored row = %+v, want %s queued after 1 event", r, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
