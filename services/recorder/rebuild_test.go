package recorder

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// foldInto runs the model stored at path until it has folded seq, or, for
// seq 0, until the log's last sequence once the change has concluded.
func foldInto(t *testing.T, ctx context.Context, log *eventlog.Log, path string, seq uint64, change string) {
	t.Helper()
	db := projectiontest.OpenDB(t, path) // checked when the test ends
	defer db.Close()
	r, err := projection.New(db, log, NewConclusions(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	if seq == 0 {
		waitFact(t, ctx, log, eventlog.Change, change, "concluded")
		var err error
		if seq, err = log.LastSeq(ctx); err != nil {
			t.Fatal(err)
		}
	}
	werr := r.WaitFor(ctx, seq)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if werr != nil {
		t.Fatal(werr)
	}
}

// dumpModel reads the model's own buckets, as services/ekaci's rebuild
// test does.
func dumpModel(t *testing.T, path string) map[string][]byte {
	t.Helper()
	out, err := projection.Dump(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOldLayoutIsRebuilt: a file of the layout before versions (JSON rows
// keyed by derivation id) is reset and rebuilt from the log, and the
// rebuilt model equals one folded live, byte for byte, without appending
// any decision twice.
func TestOldLayoutIsRebuilt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")

	change := "c0ffee"
	job := eventlog.JobsetID(change, "j")
	appendEv(t, ctx, log, change, &eventsv1.Event{Id: "cfg", Payload: &eventsv1.Event_ChangeConfigRead{ChangeConfigRead: &eventsv1.ChangeConfigRead{Configured: true, Jobs: []string{"j"}}}})
	var attrs []*eventsv1.JobAttr
	for _, n := range []string{"a", "b", "c"} {
		path := "/nix/store/" + did(n) + "-" + n + ".drv"
		appendEv(t, ctx, log, did(n), &eventsv1.Event{Id: "disc-" + n, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path}}})
		attrs = append(attrs, &eventsv1.JobAttr{Attr: n, DrvId: did(n), DrvPath: path, Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	appendEv(t, ctx, log, job, &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: change, Attrs: attrs}}})
	appendEv(t, ctx, log, did("a"), &eventsv1.Event{Id: "ok-a", Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}})
	appendEv(t, ctx, log, did("b"), &eventsv1.Event{Id: "dep-b", Payload: &eventsv1.Event_DrvDependencyFailed{DrvDependencyFailed: &eventsv1.DrvDependencyFailed{CauseDrvId: did("c"), CauseDrvPath: "/nix/store/c.drv"}}})
	for _, ev := range []*eventsv1.Event{
		{Id: "b-c", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}},
		{Id: "s-c", Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}},
		{Id: "f-c", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1, ExitCode: 1, LogTail: "boom", DurationMs: 12}}},
	} {
		appendEv(t, ctx, log, did("c"), ev)
	}
	// The live model concludes the jobset, then the change; once it has
	// folded the change's conclusion, nothing more is coming.
	foldInto(t, ctx, log, live, 0, change)
	last, err := log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A file as the recorder wrote it before versions, at the same position.
	old := filepath.Join(dir, "old.db")
	db := projectiontest.OpenDB(t, old)
	err = db.Update(func(tx *bolt.Tx) error {
		put := func(bucket, k, v string) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			return b.Put([]byte(k), []byte(v))
		}
		for _, kv := range [][3]string{
			{"_projection", "recorder", string(binary.BigEndian.AppendUint64(nil, last))},
			{string(drvsBucket), did("a"), `{"d":{"State":4,"Attempt":0,"RetryUsed":false,"Interruption":0,"Cause":"","Cached":true,"Events":2},"p":"/nix/store/a.drv"}`},
			{string(watchBucket), did("a") + job, "\x00\x00\x00\x01"},
			{string(jobsetsBucket), job, `{"change":"c0ffee","job":"","attrs":null,"unsettled":0,"concluded":true,"conclusion":2,"last":9}`},
		} {
			if err := put(kv[0], kv[1], kv[2]); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	foldInto(t, ctx, log, old, last, change)
	if now, err := log.LastSeq(ctx); err != nil || now != last {
		t.Fatalf("log at %d after the rebuild (%v), was %d: a decision was appended twice", now, err, last)
	}

	want, got := dumpModel(t, live), dumpModel(t, old)
	if len(want) < 8 {
		t.Fatalf("live model has only %d rows", len(want))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Errorf("%q:\n live    %q\n rebuilt %q", k, v, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%q: rebuilt only", k)
		}
	}

	// Rows are keyed by their discovered sequence (settled so lately that
	// they are still live).
	for _, n := range []string{"a", "b", "c"} {
		recs, _, err := log.Load(ctx, eventlog.Drv, did(n))
		if err != nil {
			t.Fatal(err)
		}
		k := string(drvsBucket) + "/" + string(binary.BigEndian.AppendUint64(nil, recs[0].Seq))
		r, err := decodeRow(got[k])
		if err != nil {
			t.Fatalf("row of %s under its discovered sequence %d: %v", n, recs[0].Seq, err)
		}
		if r.ID != did(n) || r.Drv.Events != len(recs) || r.SettledAt != recs[len(recs)-1].Seq {
			t.Errorf("row under %d = %+v, want %s after %d events, settled at %d", recs[0].Seq, r, did(n), len(recs), recs[len(recs)-1].Seq)
		}
	}
}
