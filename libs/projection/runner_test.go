package projection_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// states is a read model of every derivation's build state; on discovery
// it decides, through the decisions, to make dependency-free ones buildable.
type states struct{}

var bucket = []byte("states")

func (states) Name() string      { return "states" }
func (states) Filters() []string { return []string{eventlog.KindFilter(eventlog.Drv)} }
func (states) Init(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(bucket)
	return err
}
func (states) Apply(tx *bolt.Tx, rec eventlog.Record, out *projection.Decisions) error {
	b := tx.Bucket(bucket)
	var cur buildstate.Drv
	if v := b.Get([]byte(rec.ID)); v != nil {
		s, err := buildstate.ParseState(string(v))
		if err != nil {
			return err
		}
		cur.State = s
	}
	next, err := buildstate.Next(cur, rec.Event)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(rec.ID), []byte(next.State.String())); err != nil {
		return err
	}
	if d := rec.Event.GetDrvDiscovered(); d != nil && len(d.GetInputDrvs()) == 0 {
		ready, err := buildstate.DecideBuildable(next, 0, d)
		if err != nil {
			return err
		}
		out.Append(rec.ID, &eventsv1.Event{Id: "buildable-" + rec.ID + "-1", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: ready}}, rec.Seq)
	}
	return nil
}

func dump(t *testing.T, db *bolt.DB) string {
	t.Helper()
	var rows []string
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			rows = append(rows, string(k)+"="+string(v))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(rows)
	return fmt.Sprint(rows)
}

func start(t *testing.T, ctx context.Context, db *bolt.DB, log *eventlog.Log) (*projection.Runner, func()) {
	t.Helper()
	r, err := projection.New(db, log, states{})
	if err != nil {
		t.Fatal(err)
	}
	return r, run(t, ctx, r)
}

func discover(t *testing.T, ctx context.Context, log *eventlog.Log, id string, deps ...string) uint64 {
	t.Helper()
	a, err := log.Append(ctx, id, &eventsv1.Event{Id: "disc-" + id, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + id + ".drv", InputDrvs: deps}}}, eventlog.ExpectLast(0))
	if err != nil {
		t.Fatal(err)
	}
	return a.Seq
}

func TestFoldRestartRebuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	dir := t.TempDir()
	live := projectiontest.OpenDB(t, filepath.Join(dir, "live.db"))

	r, stop := start(t, ctx, live, log)
	discover(t, ctx, log, "a")
	discover(t, ctx, log, "b", "a")
	// a's buildable comes from the decisions; wait for it to be folded.
	natstest.Eventually(t, 10*time.Second, func() bool { return bytes.Contains([]byte(dump(t, live)), []byte("a=buildable")) }, "a becomes buildable through the decisions")
	stop()
	posBefore := r.Position()

	// Events appended while the model is down are folded on restart.
	discover(t, ctx, log, "c")
	last := discover(t, ctx, log, "d", "c")
	r, stop = start(t, ctx, live, log)
	if err := r.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	if r.Position() <= posBefore {
		t.Fatalf("position %d did not advance past %d", r.Position(), posBefore)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return bytes.Contains([]byte(dump(t, live)), []byte("c=buildable")) }, "c becomes buildable after restart")
	end, err := log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitFor(ctx, end); err != nil {
		t.Fatal(err)
	}
	stop()

	// A rebuilt model equals the live one, and re-deciding from scratch
	// appends nothing new: the decisions' guards refuse the repeats.
	rebuilt := projectiontest.OpenDB(t, filepath.Join(dir, "rebuilt.db"))
	r2, stop2 := start(t, ctx, rebuilt, log)
	if err := r2.WaitFor(ctx, end); err != nil {
		t.Fatal(err)
	}
	stop2()
	if got, want := dump(t, rebuilt), dump(t, live); got != want {
		t.Fatalf("rebuilt = %s\nlive    = %s", got, want)
	}
	if want := "[a=buildable b=queued c=buildable d=queued]"; dump(t, live) != want {
		t.Fatalf("live = %s, want %s", dump(t, live), want)
	}
	after, err := log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != end {
		t.Fatalf("rebuild appended %d events", after-end)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	projectiontest.OpenDB(t, path)
	start := time.Now()
	_, err := projection.Open(path)
	if !errors.Is(err, projection.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if time.Since(start) > projection.LockTimeout+2*time.Second {
		t.Fatalf("second Open waited %v", time.Since(start))
	}
	if _, err := projection.Open("relative.db"); err == nil {
		t.Fatal("Open of a relative path succeeded")
	}
}

// versioned is states with a layout version.
type versioned struct {
	states
	v uint32
}

func (v versioned) Version() uint32 { return v.v }
func (versioned) Reset(tx *bolt.Tx) error {
	if tx.Bucket(bucket) == nil {
		return nil
	}
	return tx.DeleteBucket(bucket)
}

func TestLayoutVersionChangeRebuilds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	db := projectiontest.OpenDB(t, "m.db")
	run := func(h projection.Handler) *projection.Runner {
		t.Helper()
		r, err := projection.New(db, log, h)
		if err != nil {
			t.Fatal(err)
		}
		end, err := log.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		if err := r.WaitFor(ctx, end); err != nil {
			t.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return r
	}
	discover(t, ctx, log, "a")
	discover(t, ctx, log, "b", "a")
	// A file written before versions were kept: unversioned, at a position.
	run(states{})
	// Poison the model so a reset is visible: a row no event made.
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte("stale"), []byte("queued")) }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		v         uint32
		wantStale bool
	}{
		{"no version stored yet, position > 0: rebuilt", 1, false},
		{"same version: kept", 1, true},
		{"new version: rebuilt", 2, false},
	} {
		if tc.wantStale {
			if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte("stale"), []byte("queued")) }); err != nil {
				t.Fatal(err)
			}
		}
		r := run(versioned{v: tc.v})
		got := dump(t, db)
		if has := bytes.Contains([]byte(got), []byte("stale=")); has != tc.wantStale {
			t.Fatalf("%s: rows %s (stale row kept: %v, want %v)", tc.name, got, has, tc.wantStale)
		}
		if !bytes.Contains([]byte(got), []byte("a=buildable")) || !bytes.Contains([]byte(got), []byte("b=queued")) {
			t.Fatalf("%s: rows %s, want a and b folded", tc.name, got)
		}
		if r.Position() == 0 {
			t.Fatalf("%s: position 0 after folding", tc.name)
		}
	}
}

// TestBatchedFactReachesTheModel: a model that knows nothing of batched
// facts still folds each transition a downstream_failed records, because
// the runner applies them one by one.
func TestBatchedFactReachesTheModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	db := projectiontest.OpenDB(t, filepath.Join(t.TempDir(), "states.db"))
	r, stop := start(t, ctx, db, log)
	defer stop()
	discover(t, ctx, log, "c")
	discover(t, ctx, log, "a", "c")
	discover(t, ctx, log, "b", "c")
	natstest.Eventually(t, 10*time.Second, func() bool { return bytes.Contains([]byte(dump(t, db)), []byte("c=buildable")) }, "c becomes buildable")
	var last uint64
	for _, ev := range []*eventsv1.Event{
		{Id: "started-c", Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{}}},
		{Id: "failed-c", Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{}}},
		{Id: "down-c", Payload: &eventsv1.Event_DrvDownstreamFailed{DrvDownstreamFailed: &eventsv1.DrvDownstreamFailed{CauseDrvPath: "/nix/store/c.drv", DrvIds: []string{"a", "b"}}}},
	} {
		a, err := log.Append(ctx, "c", ev)
		if err != nil {
			t.Fatal(err)
		}
		last = a.Seq
	}
	if err := r.WaitFor(ctx, last); err != nil {
		t.Fatal(err)
	}
	tf := buildstate.TransitiveFailure.String()
	if got, want := dump(t, db), fmt.Sprint([]string{"a=" + tf, "b=" + tf, "c=" + buildstate.Failed.String()}); got != want {
		t.Fatalf("model = %s, want %s", got, want)
	}
}
