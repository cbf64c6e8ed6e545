package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/natstest"
)

// TestLostAcksDoNotHang (review finding 12): a core subscriber takes every
// event and work subject on a server without ekaci's streams, so a
// publish is received and never acknowledged (what a reply lost without a
// disconnect looks like). Pipelined appends with a context that never
// ends must still return, each item failing with a transient error.
func TestLostAcksDoNotHang(t *testing.T) {
	for _, tc := range []struct {
		name string
		// jsOpts are the connection's jetstream options; run appends.
		jsOpts []jetstream.JetStreamOpt
		run    func(js jetstream.JetStream, n int) ([]error, error)
	}{
		{"AppendMany: the log's ack timeout", nil, func(js jetstream.JetStream, n int) ([]error, error) {
			items := make([]eventlog.Item, n)
			for i := range items {
				id := fmt.Sprintf("d%d", i)
				items[i] = eventlog.Item{ID: id, Event: discovered("disc-"+id, "/nix/store/"+id+".drv"), Expect: true}
			}
			_, errs, err := eventlog.New(js, eventlog.WithAckTimeout(time.Second)).AppendMany(context.Background(), items)
			return errs, err
		}},
		{"PublishMany: the connection's async publish timeout", []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(time.Second)}, func(js jetstream.JetStream, n int) ([]error, error) {
			items := make([]eventlog.Work, n)
			for i := range items {
				items[i] = eventlog.Work{Subject: "ekaci.work.build.x.local", MsgID: fmt.Sprintf("w%d", i), Message: buildable("b")}
			}
			return eventlog.PublishMany(context.Background(), js, items)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.NewServer(t)
			nc, _ := natstest.Connect(t, s)
			if _, err := nc.Subscribe("ekaci.>", func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			js, err := jetstream.New(nc, tc.jsOpts...)
			if err != nil {
				t.Fatal(err)
			}
			const n = 1500 // more than a window: some wait in the pipeline, some are not sent yet
			type result struct {
				errs []error
				err  error
			}
			done := make(chan result, 1)
			start := time.Now()
			go func() {
				errs, err := tc.run(js, n)
				done <- result{errs, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("pipelined appends without acknowledgements did not return within 20 s")
			}
			t.Logf("returned after %v (err %v)", time.Since(start).Round(time.Millisecond), r.err)
			if r.err != nil && !eventlog.Transient(r.err) {
				t.Fatalf("err = %v, want a transient one or none", r.err)
			}
			for i, e := range r.errs {
				if !eventlog.Transient(e) {
					t.Fatalf("item %d: err %v, want a transient error (the append is unknown, to retry)", i, e)
				}
			}
		})
	}
}

// TestLogLinesCannotStarveEvents (review finding 5): on a server whose
// JetStream store is small, many live log lines published with core NATS
// (as the builder does) fill only EKACI_LOGS' budget, and an event append
// still succeeds; a build attempt keeps at most LogLinesPerAttempt lines.
func TestLogLinesCannotStarveEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const mib = 1 << 20
	s := natstest.NewServerWith(t, t.TempDir(), func(o *server.Options) { o.JetStreamMaxStore = 8 * mib })
	nc, js := natstest.Connect(t, s)
	o := eventlog.StreamOptions{EventsMaxBytes: 4 * mib, LogsMaxBytes: 2 * mib, WorkMaxBytes: mib, LogLinesPerAttempt: 20}
	if err := eventlog.Provision(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	l := eventlog.New(js)
	if _, err := l.Append(ctx, "a", discovered("disc-a", "/nix/store/a.drv")); err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 60<<10))
	const lines = 200 // 12 MB: more than the whole store
	for i := range lines {
		// Ten attempts of 20 lines each.
		if err := nc.Publish(fmt.Sprintf("ekaci.log.a.%d", i%10), line); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	logs, err := js.Stream(ctx, eventlog.LogsStream)
	if err != nil {
		t.Fatal(err)
	}
	// Core NATS publishes are not acknowledged: wait (without failing: a
	// full store refuses lines) for the stream to take what it will.
	var info *jetstream.StreamInfo
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if info, err = logs.Info(ctx); err == nil && info.State.LastSeq == lines {
			break
		}
	}
	if _, err := l.Append(ctx, "b", discovered("disc-b", "/nix/store/b.drv")); err != nil {
		t.Fatalf("an event append after many log lines: %v", err)
	}
	if info, err = logs.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != lines || info.State.Bytes > uint64(o.LogsMaxBytes) {
		t.Fatalf("EKACI_LOGS took %d of %d lines and holds %d bytes (budget %d): want every line taken, the oldest dropped", info.State.LastSeq, lines, info.State.Bytes, o.LogsMaxBytes)
	}

	// One attempt's lines beyond its cap push out its own oldest.
	for i := range 50 {
		if err := nc.Publish("ekaci.log.c.1", []byte(fmt.Sprintf("line %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		info, err = logs.Info(ctx, jetstream.WithSubjectFilter("ekaci.log.c.1"))
		return err == nil && info.State.LastSeq == lines+50
	}, "attempt c.1's lines reached EKACI_LOGS")
	if got := info.State.Subjects["ekaci.log.c.1"]; got != uint64(o.LogLinesPerAttempt) {
		t.Fatalf("attempt c.1 keeps %d lines, want its cap %d", got, o.LogLinesPerAttempt)
	}
}

// TestProvisionRefusesBudgetsOverTheStore: streams whose byte budgets the
// server cannot reserve are refused at start, with the flags that fix it,
// rather than accepted and failing appends later.
func TestProvisionRefusesBudgetsOverTheStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.NewServerWith(t, t.TempDir(), func(o *server.Options) { o.JetStreamMaxStore = 64 << 20 })
	_, js := natstest.Connect(t, s)
	err := eventlog.Provision(ctx, js, eventlog.StreamOptions{}) // the defaults: 21 GiB
	if err == nil {
		t.Fatal("Provision reserved 21 GiB on a 64 MiB store")
	}
	for _, want := range []string{"--events-max-mib", "max_file_store"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %s", err, want)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"disconnected, wrapped", fmt.Errorf("append x: %w", nats.ErrDisconnected), true},
		{"async ack timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"pipeline ack timeout", fmt.Errorf("%w (1s)", eventlog.ErrAckTimeout), true},
		{"no responders", nats.ErrNoResponders, true},
		{"no stream response", jetstream.ErrNoStreamResponse, true},
		{"request timeout", context.DeadlineExceeded, true},
		{"store full", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{"stream budget full", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, true},
		{"conflict", fmt.Errorf("append x: %w", eventlog.ErrConflict), false},
		{"bad event", eventlog.ErrBadEvent, false},
		{"max payload", nats.ErrMaxPayload, false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"cancelled", context.Canceled, false},
		{"stream not found", &jetstream.APIError{Code: 404, ErrorCode: 10059, Description: "stream not found"}, false},
		{"anything else", errors.New("boom"), false},
	} {
		if got := eventlog.Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestWatchStorageReportsBudgets: every stream's bytes are reported with
// the budget Provision gave it.
func TestWatchStorageReportsBudgets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.NewServer(t))
	o := eventlog.StreamOptions{EventsMaxBytes: 3 << 20, LogsMaxBytes: 2 << 20, WorkMaxBytes: 1 << 20}
	if err := eventlog.Provision(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	if _, err := eventlog.New(js).Append(ctx, "a", discovered("disc-a", "/nix/store/a.drv")); err != nil {
		t.Fatal(err)
	}
	got := make(chan eventlog.Usage, 3)
	wctx, stop := context.WithCancel(ctx)
	go eventlog.WatchStorage(wctx, js, time.Hour, zerolog.Nop(), func(u eventlog.Usage) { got <- u })
	seen := map[string]eventlog.Usage{}
	for range 3 {
		select {
		case u := <-got:
			seen[u.Stream] = u
		case <-ctx.Done():
			t.Fatalf("reported %v, then nothing", seen)
		}
	}
	stop()
	want := map[string]int64{eventlog.EventsStream: o.EventsMaxBytes, eventlog.LogsStream: o.LogsMaxBytes, eventlog.WorkStream: o.WorkMaxBytes}
	for name, max := range want {
		if u := seen[name]; u.MaxBytes != uint64(max) {
			t.Errorf("%s: reported %+v, want max %d", name, u, max)
		}
	}
	if seen[eventlog.EventsStream].Bytes == 0 {
		t.Errorf("%s reported empty after an append", eventlog.EventsStream)
	}
}
