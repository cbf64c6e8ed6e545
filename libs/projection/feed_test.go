package projection_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
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

// seen records the sequence of every event it folds and refuses one
// folded twice.
type seen struct {
	name    string
	filters []string
}

func (s seen) Name() string      { return s.name }
func (s seen) Filters() []string { return s.filters }
func (s seen) Init(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists([]byte(s.name))
	return err
}
func (s seen) Apply(tx *bolt.Tx, rec eventlog.Record, _ *projection.Decisions) error {
	b := tx.Bucket([]byte(s.name))
	k := binary.BigEndian.AppendUint64(nil, rec.Seq)
	if b.Get(k) != nil {
		return fmt.Errorf("%s folded seq %d twice", s.name, rec.Seq)
	}
	return b.Put(k, []byte(rec.Subject))
}

func seqs(t *testing.T, db *bolt.DB, name string) []uint64 {
	t.Helper()
	var out []uint64
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(name)).ForEach(func(k, _ []byte) error {
			out = append(out, binary.BigEndian.Uint64(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func run(t *testing.T, ctx context.Context, r *projection.Runner) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// TestFeedSharesOneConsumer: two read models at different positions, with
// different filters, on one feed: it starts once both joined, from the
// earlier position, and each folds exactly the events its filters match,
// once, whether it folded some before on a consumer of its own or not.
func TestFeedSharesOneConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	var drvSeqs, changeSeqs []uint64
	appendSome := func(from, to int) {
		for i := from; i < to; i++ {
			drvSeqs = append(drvSeqs, discover(t, ctx, log, fmt.Sprintf("d%d", i)))
			a, err := log.Append(ctx, fmt.Sprintf("c%d", i), &eventsv1.Event{Id: fmt.Sprintf("req-%d", i),
				Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{RepoUrl: "file:///r", HeadCommit: "h"}}})
			if err != nil {
				t.Fatal(err)
			}
			changeSeqs = append(changeSeqs, a.Seq)
		}
	}
	drvs := seen{"drvs", []string{eventlog.KindFilter(eventlog.Drv)}}
	changes := seen{"changes", []string{eventlog.KindFilter(eventlog.Change)}}
	dir := t.TempDir()
	drvDB, changeDB := projectiontest.OpenDB(t, filepath.Join(dir, "drvs.db")), projectiontest.OpenDB(t, filepath.Join(dir, "changes.db"))

	// drvs folds the first events on a consumer of its own.
	appendSome(0, 5)
	r, err := projection.New(drvDB, log, drvs)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, ctx, r)
	if err := r.WaitFor(ctx, drvSeqs[4]); err != nil {
		t.Fatal(err)
	}
	stop()
	appendSome(5, 10)

	feed := projection.NewFeed(log, zerolog.Nop(), "drvs", "changes")
	rd, err := projection.New(drvDB, log, drvs, projection.WithFeed(feed))
	if err != nil {
		t.Fatal(err)
	}
	before := rd.Position()
	stopD := run(t, ctx, rd)
	// Absence, proven by waiting: a runner that did not wait for its feed
	// would fold within the linger (5 ms) and commit within the checkpoint
	// idle time (20 ms); 300 ms is more than ten times both.
	time.Sleep(300 * time.Millisecond)
	if rd.Position() != before {
		t.Fatalf("drvs moved from %d to %d before the feed's other reader joined", before, rd.Position())
	}
	rc, err := projection.New(changeDB, log, changes, projection.WithFeed(feed))
	if err != nil {
		t.Fatal(err)
	}
	stopC := run(t, ctx, rc)
	appendSome(10, 15)
	if err := rd.WaitFor(ctx, drvSeqs[len(drvSeqs)-1]); err != nil {
		t.Fatal(err)
	}
	if err := rc.WaitFor(ctx, changeSeqs[len(changeSeqs)-1]); err != nil {
		t.Fatal(err)
	}
	stopD()
	stopC()
	if got := seqs(t, drvDB, "drvs"); !slices.Equal(got, drvSeqs) {
		t.Fatalf("drvs folded %v, want %v", got, drvSeqs)
	}
	if got := seqs(t, changeDB, "changes"); !slices.Equal(got, changeSeqs) {
		t.Fatalf("changes folded %v, want %v", got, changeSeqs)
	}
}
