package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
)

// target is one deployment the event log must behave the same on.
type target struct {
	name string
	// opts provision the streams as that deployment does.
	opts eventlog.StreamOptions
	// start brings the deployment up for the whole suite and returns how a
	// case gets a connection to it, with no ekaci stream on it yet.
	start func(t *testing.T) (open func(t *testing.T) jetstream.JetStream)
}

func targets() []target {
	return []target{
		{"single-node", eventlog.StreamOptions{}, func(*testing.T) func(t *testing.T) jetstream.JetStream {
			return func(t *testing.T) jetstream.JetStream {
				_, js := natstest.Connect(t, natstest.NewServer(t))
				return js
			}
		}},
		// The deployed cluster (deploy/nats, fsync on every write) with
		// the streams at 3 replicas, as in production: a replicated
		// stream reports a stale guard with another error code (10164).
		// One cluster serves every case, each connected to the next node
		// in turn; a case's streams are deleted when it ends.
		{"cluster", eventlog.StreamOptions{Replicas: 3}, func(t *testing.T) func(t *testing.T) jetstream.JetStream {
			servers := natstest.NewClusterFromDir(t, filepath.Join("..", "..", "deploy", "nats"))
			next := 0
			return func(t *testing.T) jetstream.JetStream {
				_, js := natstest.Connect(t, servers[next%len(servers)])
				next++
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					for _, name := range []string{eventlog.EventsStream, eventlog.WorkStream, eventlog.LogsStream} {
						if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
							t.Errorf("delete stream %s after the case: %v", name, err)
						}
					}
				})
				return js
			}
		}},
	}
}

func discovered(id, path string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path, System: "x86_64-linux"}}}
}

func buildable(id string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}}
}

// TestConformance runs the event log's contract against every target.
func TestConformance(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			open := tg.start(t)
			cases := []struct {
				name string
				run  func(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log)
			}{
				{"provision is idempotent and documented", func(t *testing.T, ctx context.Context, js jetstream.JetStream, _ *eventlog.Log) {
					testProvision(t, ctx, js, tg.opts)
				}},
				{"append is readable", testAppendReadable},
				{"re-append is a no-op", testDedup},
				{"stale writer conflicts", testConflict},
				{"read replays in order", testReadOrder},
				{"bad events are refused", testBadEvents},
				{"history cannot be deleted", testDenyDelete},
				{"pipelined appends keep order, guards and dedup", testAppendMany},
				{"racing guarded appends: one lands per aggregate", testRacingGuards},
				{"a batched fact is read with its transitions", testBatched},
				{"a load sees every append acknowledged before it", testLoadAfterAppend},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					// Generous: a case appends up to 600 events one at a
					// time, each acknowledged by 2 of 3 replicas, on a
					// machine other test packages share.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					defer cancel()
					js := open(t)
					if err := eventlog.Provision(ctx, js, tg.opts); err != nil {
						t.Fatal(err)
					}
					c.run(t, ctx, js, eventlog.New(js))
				})
			}
		})
	}
}

func testProvision(t *testing.T, ctx context.Context, js jetstream.JetStream, opts eventlog.StreamOptions) {
	if err := eventlog.Provision(ctx, js, opts); err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	s, err := js.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if !cfg.DenyDelete || !cfg.DenyPurge || cfg.Discard != jetstream.DiscardNew || cfg.Storage != jetstream.FileStorage || cfg.MaxAge != 0 {
		t.Fatalf("%s config = %+v, want deny delete/purge, discard new, file storage, no max age", eventlog.EventsStream, cfg)
	}
	if want := max(opts.Replicas, 1); cfg.Replicas != want {
		t.Fatalf("%s has %d replicas, want %d", eventlog.EventsStream, cfg.Replicas, want)
	}
	w, err := js.Stream(ctx, eventlog.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.CachedInfo().Config.Retention; got != jetstream.WorkQueuePolicy {
		t.Fatalf("%s retention = %v, want work queue", eventlog.WorkStream, got)
	}
}

func testAppendReadable(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	a, err := l.Append(ctx, "abc123", discovered("drv-abc123-discovered", "/nix/store/abc123-hello.drv"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "ekaci.evt.drv.abc123.discovered"; a.Subject != want {
		t.Fatalf("subject = %s, want %s", a.Subject, want)
	}
	s, _ := js.Stream(ctx, eventlog.EventsStream)
	raw, err := s.GetMsg(ctx, a.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get(eventlog.HeaderEventType); got != "ekaci.events.v1.DrvDiscovered" {
		t.Fatalf("type header = %q", got)
	}
	if got := raw.Header.Get("Nats-Msg-Id"); got != "drv-abc123-discovered" {
		t.Fatalf("msg id = %q", got)
	}
	body := string(raw.Data)
	for _, want := range []string{`"drv_discovered"`, `"drv_path":"/nix/store/abc123-hello.drv"`, `"occurred_at"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("payload %s lacks %s", body, want)
		}
	}
}

func testDedup(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	first, err := l.Append(ctx, "d1", discovered("drv-d1-discovered", "/nix/store/d1-x.drv"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Append(ctx, "d1", discovered("drv-d1-discovered", "/nix/store/d1-x.drv"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("re-append = %+v, want duplicate of seq %d", again, first.Seq)
	}
	recs, _, err := l.Load(ctx, eventlog.Drv, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("history has %d events, want 1", len(recs))
	}
}

func testConflict(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	a, err := l.Append(ctx, "c1", discovered("c1-disc", "/nix/store/c1-x.drv"), eventlog.ExpectLast(0))
	if err != nil {
		t.Fatalf("first append expecting a new aggregate: %v", err)
	}
	if _, err := l.Append(ctx, "c1", discovered("c1-disc-2", "/nix/store/c1-x.drv"), eventlog.ExpectLast(0)); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("second 'new aggregate' append: err = %v, want ErrConflict", err)
	}
	// Another aggregate moving on does not disturb c1's guard.
	if _, err := l.Append(ctx, "c2", discovered("c2-disc", "/nix/store/c2-x.drv"), eventlog.ExpectLast(0)); err != nil {
		t.Fatal(err)
	}
	b, err := l.Append(ctx, "c1", buildable("c1-b1"), eventlog.ExpectLast(a.Seq))
	if err != nil {
		t.Fatalf("append at the right sequence: %v", err)
	}
	if _, err := l.Append(ctx, "c1", buildable("c1-b2"), eventlog.ExpectLast(a.Seq)); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("stale append: err = %v, want ErrConflict", err)
	}
	_, last, err := l.Load(ctx, eventlog.Drv, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if last != b.Seq {
		t.Fatalf("Load last = %d, want %d", last, b.Seq)
	}
}

func testReadOrder(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	const n = 600 // more than one fetch batch
	for i := range n {
		id := fmt.Sprintf("r%d", i%7)
		if _, err := l.Append(ctx, id, discovered(fmt.Sprintf("e%d", i), fmt.Sprintf("/nix/store/%s-x.drv", id))); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	if err := l.Read(ctx, 0, nil, func(r eventlog.Record) error {
		if r.Aggregate != eventlog.Drv || r.Fact != "discovered" || r.Event.GetDrvDiscovered() == nil {
			return fmt.Errorf("bad record %+v", r)
		}
		seqs = append(seqs, r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != n {
		t.Fatalf("read %d events, want %d", len(seqs), n)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("out of order at %d: %d after %d", i, seqs[i], seqs[i-1])
		}
	}
	var tail int
	if err := l.Read(ctx, seqs[n-10], []string{eventlog.AggregateFilter(eventlog.Drv, "r3")}, func(eventlog.Record) error { tail++; return nil }); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := n - 9; i < n; i++ {
		if i%7 == 3 {
			want++
		}
	}
	if tail != want {
		t.Fatalf("filtered read from %d = %d events, want %d", seqs[n-10], tail, want)
	}
}

func testBadEvents(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	tests := []struct {
		name string
		id   string
		ev   *eventsv1.Event
	}{
		{"no event id", "x", discovered("", "/nix/store/x.drv")},
		{"id with a dot", "a.b", discovered("e", "/nix/store/x.drv")},
		{"id with a wildcard", "a*", discovered("e", "/nix/store/x.drv")},
		{"no payload", "x", &eventsv1.Event{Id: "e"}},
	}
	for _, tt := range tests {
		if _, err := l.Append(ctx, tt.id, tt.ev); !errors.Is(err, eventlog.ErrBadEvent) {
			t.Errorf("%s: err = %v, want ErrBadEvent", tt.name, err)
		}
	}
}

func testDenyDelete(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	a, err := l.Append(ctx, "k1", discovered("k1", "/nix/store/k1-x.drv"))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, eventlog.EventsStream)
	if err := s.DeleteMsg(ctx, a.Seq); err == nil {
		t.Fatal("deleting an event succeeded")
	}
	if err := s.Purge(ctx); err == nil {
		t.Fatal("purging the event log succeeded")
	}
}

func testAppendMany(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	const n = 3000 // more than the in-flight window
	var items []eventlog.Item
	for i := range n {
		id := fmt.Sprintf("%032d", i)
		items = append(items, eventlog.Item{ID: id, Event: discovered("d-"+id, "/nix/store/"+id+"-x.drv"), Expect: true})
	}
	// A stale guard on item 7 (it expects a history it does not have), a
	// re-append of item 0's event as item n.
	items[7].ExpectSeq = 999999
	items = append(items, eventlog.Item{ID: items[0].ID, Event: discovered("d-"+items[0].ID, "/nix/store/"+items[0].ID+"-x.drv")})
	got, errs, err := l.AppendMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range n {
		if i == 7 {
			if !errors.Is(errs[i], eventlog.ErrConflict) {
				t.Fatalf("item 7: %v, want ErrConflict", errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("item %d: %v", i, errs[i])
		}
		if got[i].Seq <= last {
			t.Fatalf("item %d landed at %d after %d: out of order", i, got[i].Seq, last)
		}
		last = got[i].Seq
	}
	if errs[n] != nil || !got[n].Duplicate || got[n].Seq != got[0].Seq {
		t.Fatalf("re-append: %+v %v, want a duplicate of seq %d", got[n], errs[n], got[0].Seq)
	}
	if seq, err := l.LastSeq(ctx); err != nil || seq != uint64(n-1) {
		t.Fatalf("stream holds %d events (%v), want %d", seq, err, n-1)
	}
}

// testRacingGuards pipelines several appends guarded on the same history
// of one aggregate, as two deciders racing would: exactly one lands, the
// others conflict. A replicated stream refuses those still in flight
// behind the first with another code (10164) than a stale guard (10071).
func testRacingGuards(t *testing.T, ctx context.Context, js jetstream.JetStream, l *eventlog.Log) {
	const aggregates, racers = 20, 3
	var items []eventlog.Item
	for a := range aggregates {
		id := fmt.Sprintf("%032d", a)
		for r := range racers {
			items = append(items, eventlog.Item{ID: id, Event: discovered(fmt.Sprintf("d-%s-%d", id, r), "/nix/store/"+id+"-x.drv"), Expect: true})
		}
	}
	_, errs, err := l.AppendMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for a := range aggregates {
		landed := 0
		for r := range racers {
			switch e := errs[a*racers+r]; {
			case e == nil:
				landed++
			case !errors.Is(e, eventlog.ErrConflict):
				t.Fatalf("aggregate %d, racer %d: %v, want ErrConflict or success", a, r, e)
			}
		}
		if landed != 1 {
			t.Fatalf("aggregate %d: %d of %d racing appends landed, want 1", a, landed, racers)
		}
		recs, _, err := l.Load(ctx, eventlog.Drv, items[a*racers].ID)
		if err != nil || len(recs) != 1 {
			t.Fatalf("aggregate %d holds %d events (%v), want 1", a, len(recs), err)
		}
	}
}

// testLoadAfterAppend: a Load right after an acknowledged append returns
// it. On a replicated stream the read's consumer may be placed on a
// replica that has not applied the append yet; a decider reading that
// history would decide on a stale state (the builder dropped a request
// as stale that way on the 3-node bench mesh).
func testLoadAfterAppend(t *testing.T, ctx context.Context, _ jetstream.JetStream, l *eventlog.Log) {
	const id, n = "read-your-writes", 150
	var last uint64
	for i := range n {
		a, err := l.Append(ctx, id, discovered(fmt.Sprintf("ryw-%d", i), "/nix/store/x.drv"), eventlog.ExpectLast(last))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		last = a.Seq
		recs, got, err := l.Load(ctx, eventlog.Drv, id)
		if err != nil {
			t.Fatalf("load after append %d: %v", i, err)
		}
		if got != last || len(recs) != i+1 {
			t.Fatalf("load after append %d (at %d): %d events ending at %d, want %d ending at %d", i, last, len(recs), got, i+1, last)
		}
	}
}

// TestLeaderAhead: Load's check of a read against the leader of a
// replicated stream. A history read up to an older event (as from a
// replica behind) is reported behind with the leader's last sequence on
// the aggregate's subjects; one read to the end is not; nor is an
// aggregate with no event. On one replica nothing is asked.
func TestLeaderAhead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			js := tg.start(t)(t)
			if err := eventlog.Provision(ctx, js, tg.opts); err != nil {
				t.Fatal(err)
			}
			l := eventlog.New(js)
			filter := eventlog.AggregateFilter(eventlog.Drv, "ahead")
			first, err := l.Append(ctx, "ahead", discovered("ahead-1", "/nix/store/x.drv"), eventlog.ExpectLast(0))
			if err != nil {
				t.Fatal(err)
			}
			second, err := l.Append(ctx, "ahead", buildable("ahead-2"), eventlog.ExpectLast(first.Seq))
			if err != nil {
				t.Fatal(err)
			}
			// Another aggregate's later event is not this one's.
			if _, err := l.Append(ctx, "other", discovered("other-1", "/nix/store/y.drv"), eventlog.ExpectLast(0)); err != nil {
				t.Fatal(err)
			}
			replicated := tg.opts.Replicas > 1
			for _, c := range []struct {
				name   string
				filter string
				last   uint64
				want   uint64
			}{
				{"read behind the leader", filter, first.Seq, second.Seq},
				{"read to the end", filter, second.Seq, 0},
				{"nothing read", filter, 0, second.Seq},
				{"an aggregate without events", eventlog.AggregateFilter(eventlog.Drv, "none"), 0, 0},
			} {
				want := c.want
				if !replicated {
					want = 0 // one replica is its own leader
				}
				got, err := eventlog.LeaderAhead(l, ctx, c.filter, c.last)
				if err != nil || got != want {
					t.Errorf("%s: %d, %v; want %d", c.name, got, err, want)
				}
			}
		})
	}
}

// TestLeaderAheadWithoutLeader: with no stream leader (the leader and
// one follower stopped, the client on the other follower) the question to
// the leader must end with an error, within its own timeout, not wait as
// long as its caller's context (a check's handler waited for ever in make
// mesh-test's partition scenario).
func TestLeaderAheadWithoutLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	servers := natstest.NewClusterFromDir(t, filepath.Join("..", "..", "deploy", "nats"))
	_, js := natstest.Connect(t, servers[0])
	if err := eventlog.Provision(ctx, js, eventlog.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.New(js).Append(ctx, "lonely", discovered("lonely-1", "/nix/store/x.drv"), eventlog.ExpectLast(0)); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	leader := s.CachedInfo().Cluster.Leader
	var follower *server.Server
	for _, srv := range servers {
		if srv.Name() != leader && follower == nil {
			follower = srv
		}
	}
	_, jsf := natstest.Connect(t, follower)
	l := eventlog.New(jsf)
	if _, err := eventlog.LeaderAhead(l, ctx, eventlog.AggregateFilter(eventlog.Drv, "lonely"), 0); err != nil {
		t.Fatalf("with a leader: %v", err)
	}
	for _, srv := range servers {
		if srv != follower {
			srv.Shutdown()
		}
	}
	done := make(chan error, 1)
	go func() {
		// No deadline of its own, as a worker's handler context.
		_, err := eventlog.LeaderAhead(l, context.Background(), eventlog.AggregateFilter(eventlog.Drv, "lonely"), 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no leader, and yet an answer")
		}
		t.Logf("without a leader: %v", err)
	case <-ctx.Done():
		t.Fatal("the question to a missing leader did not end within 2 min")
	}
}
