package projection_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// renamed is a versioned states model under another name, so that two of
// them can share a feed.
type renamed struct {
	versioned
	name string
}

func (r renamed) Name() string { return r.name }

// TestModelAheadOfLogIsRebuilt (review finding 6): a model folds a, b, c,
// d (seqs 1-4) from log A; then its file meets log B, which holds only a
// and b — what a power loss leaves of A on a server that fsyncs every two
// minutes, or another log altogether. Events appended to B take seqs 3 on.
// The model must notice that the event at its position is not the one it
// folded, rebuild from B and fold every event B has: a model that trusted
// its position would skip B's events 3 and 4 for good. The same holds on
// a shared feed (the all-in-one), and a model that is the log's must not
// be rebuilt on restart.
func TestModelAheadOfLogIsRebuilt(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before fills log B before the model restarts on it, after once
		// it runs; sameLog keeps log A instead.
		before, after []string
		sameLog       bool
		want          string
	}{
		{"log lost c and d; model restarts first", []string{"a", "b"}, []string{"e", "f", "g"}, false,
			"[a=queued b=queued e=queued f=queued g=queued]"},
		{"log lost c and d; new events took seqs 3-5 before the restart", []string{"a", "b", "e", "f", "g"}, nil, false,
			"[a=queued b=queued e=queued f=queued g=queued]"},
		{"d appended again at seq 4 (same id, stored later)", []string{"a", "b", "x", "d"}, nil, false,
			"[a=queued b=queued d=queued x=queued]"},
		{"same log: kept", nil, []string{"e"}, true,
			"[a=queued b=queued c=queued d=queued e=queued stale=queued]"},
	} {
		for _, onFeed := range []bool{false, true} {
			name := tc.name + " (own consumer)"
			if onFeed {
				name = tc.name + " (shared feed)"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				logA := eventlog.New(eventlogtest.JetStream(t, ctx))
				dir := t.TempDir()
				models := []projection.Handler{renamed{versioned{v: 1}, "one"}}
				if onFeed {
					models = append(models, renamed{versioned{v: 1}, "two"})
				}
				dbs := make([]*bolt.DB, len(models))
				for i := range models {
					dbs[i] = projectiontest.OpenDB(t, filepath.Join(dir, models[i].Name()+".db"))
				}
				// Every derivation has an input, so the model decides
				// nothing and the sequences are the events'.
				for _, id := range []string{"a", "b", "c", "d"} {
					discover(t, ctx, logA, id, "in")
				}
				for i, h := range models {
					r, err := projection.New(dbs[i], logA, h)
					if err != nil {
						t.Fatal(err)
					}
					stop := run(t, ctx, r)
					if err := r.WaitFor(ctx, 4); err != nil {
						t.Fatal(err)
					}
					stop()
					// A row no event made: still there means not rebuilt.
					if err := dbs[i].Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte("stale"), []byte("queued")) }); err != nil {
						t.Fatal(err)
					}
				}

				logB := logA
				if !tc.sameLog {
					logB = eventlog.New(eventlogtest.JetStream(t, ctx))
				}
				for _, id := range tc.before {
					discover(t, ctx, logB, id, "in")
				}
				var feed *projection.Feed
				if onFeed {
					feed = projection.NewFeed(logB, zerolog.Nop(), "one", "two")
				}
				runners := make([]*projection.Runner, len(models))
				// Stopped in the order they joined: a feed stops with the
				// context of the last to join.
				var stops []func()
				defer func() {
					for _, stop := range stops {
						stop()
					}
				}()
				for i, h := range models {
					var opts []projection.Option
					if feed != nil {
						opts = append(opts, projection.WithFeed(feed))
					}
					r, err := projection.New(dbs[i], logB, h, opts...)
					if err != nil {
						t.Fatal(err)
					}
					runners[i] = r
					stops = append(stops, run(t, ctx, r))
				}
				for _, id := range tc.after {
					discover(t, ctx, logB, id, "in")
				}
				end, err := logB.LastSeq(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for i, r := range runners {
					if err := r.WaitFor(ctx, end); err != nil {
						t.Fatal(err)
					}
					// The stale row is gone exactly when the model was rebuilt.
					want := tc.want
					natstest.Eventually(t, 10*time.Second, func() bool { return dump(t, dbs[i]) == want },
						models[i].Name()+" folds every event of the log it runs on, once: want "+want+", have "+dump(t, dbs[i]))
				}
			})
		}
	}
}

// TestUnversionedModelAheadOfLogIsRefused: a model that cannot rebuild
// itself (not Versioned) stops with ErrAheadOfLog rather than skip events.
func TestUnversionedModelAheadOfLogIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logA := eventlog.New(eventlogtest.JetStream(t, ctx))
	db := projectiontest.OpenDB(t, "m.db")
	for _, id := range []string{"a", "b", "c"} {
		discover(t, ctx, logA, id, "in")
	}
	r, stop := start(t, ctx, db, logA)
	if err := r.WaitFor(ctx, 3); err != nil {
		t.Fatal(err)
	}
	stop()
	logB := eventlog.New(eventlogtest.JetStream(t, ctx))
	discover(t, ctx, logB, "a", "in")
	r, err := projection.New(db, logB, states{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); !errors.Is(err, projection.ErrAheadOfLog) {
		t.Fatalf("Run = %v, want ErrAheadOfLog", err)
	}
}

// TestDecisionsReplayedAfterDuplicateWindowAreRefused (issue 11, item 3):
// on a log whose duplicate window is a second, a model rebuilt after the
// window re-decides every decision with the same ids, which the log no
// longer remembers: the sequence guards alone must refuse them all.
func TestDecisionsReplayedAfterDuplicateWindowAreRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const window = time.Second
	log := eventlog.New(eventlogtest.JetStreamWith(t, ctx, eventlog.StreamOptions{DuplicateWindow: window}))
	dir := t.TempDir()
	live := projectiontest.OpenDB(t, filepath.Join(dir, "live.db"))
	_, stop := start(t, ctx, live, log)
	discover(t, ctx, log, "a")
	discover(t, ctx, log, "b")
	discover(t, ctx, log, "c", "a")
	natstest.Eventually(t, 10*time.Second, func() bool {
		d := dump(t, live)
		return strings.Contains(d, "a=buildable") && strings.Contains(d, "b=buildable")
	}, "a and b become buildable through the decisions")
	stop()
	end, err := log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	decidedAt := time.Now()
	// Time itself is what is waited for: the duplicate window to pass.
	time.Sleep(time.Until(decidedAt.Add(2 * window)))

	rebuilt := projectiontest.OpenDB(t, filepath.Join(dir, "rebuilt.db"))
	r, stop := start(t, ctx, rebuilt, log)
	if err := r.WaitFor(ctx, end); err != nil {
		t.Fatal(err)
	}
	stop()
	after, err := log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != end {
		t.Fatalf("the rebuilt model appended %d decisions again after the duplicate window", after-end)
	}
	if got, want := dump(t, rebuilt), dump(t, live); got != want {
		t.Fatalf("rebuilt = %s, live = %s", got, want)
	}
	// The window did pass: the same decision without its guard lands.
	a, err := log.Append(ctx, "a", &eventsv1.Event{Id: "buildable-a-1", Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Duplicate {
		t.Fatal("the duplicate window had not passed: the test proves nothing")
	}
}
