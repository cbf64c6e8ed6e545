package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/libs/natsembed"
	"github.com/ekaci/ekaci/libs/projection"
)

// AtEnd, when set, runs when a scheduler scenario has finished, before
// its pipeline stops (ekaci-bench -memprofile).
var AtEnd func()

// Trace, when set, receives a scenario's progress samples (ekaci-bench
// -trace).
var Trace io.Writer

// Result is what one scenario measured; the fields used depend on it.
type Result struct {
	Scenario string
	N        int
	Edges    int
	Seconds  float64 // the scenario's headline duration
	Rate     float64 // per second
	Extra    map[string]float64
	Note     string
}

// Ceiling measures what this machine's JetStream does without ekaci: n
// messages published asynchronously with message ids onto a file-backed
// stream, consumed by a durable pull consumer that acknowledges each one;
// the rate is n over the time until the last one is acknowledged.
func Ceiling(ctx context.Context, dir string, n int) (Result, error) {
	res := Result{Scenario: "jetstream-ceiling", N: n}
	srv, err := natsembed.Start(natsembed.Config{DataDir: filepath.Join(dir, "nats"), Port: -1, Logger: zerolog.Nop()})
	if err != nil {
		return res, err
	}
	defer srv.Shutdown(context.Background())
	pubConn, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return res, err
	}
	defer pubConn.Close()
	subConn, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return res, err
	}
	defer subConn.Close()
	pub, _ := jetstream.New(pubConn, jetstream.WithPublishAsyncMaxPending(4096))
	sub, _ := jetstream.New(subConn)
	if _, err := pub.CreateStream(ctx, jetstream.StreamConfig{Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage, Duplicates: eventlog.DefaultDuplicateWindow}); err != nil {
		return res, err
	}
	cons, err := sub.CreateOrUpdateConsumer(ctx, "CEILING", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return res, err
	}
	// A payload the size of an ekaci event.
	payload := []byte(`{"id":"build_succeeded-0123456789abcdfghijklmnpqrsvwx-1","occurred_at":"2026-11-24T14:28:58.853659600Z","drv_build_succeeded":{"attempt":1,"duration_ms":35}}`)
	var acked atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if acked.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return res, err
	}
	defer cc.Stop()
	start := time.Now()
	for i := range n {
		msg := nats.NewMsg(fmt.Sprintf("ceiling.drv.%d.build_succeeded", i%1000))
		msg.Data = payload
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("m-", i))
		// A publisher with 4,096 acks outstanding waits for the server
		// (back-pressure is what is measured), longer than the default
		// 200 ms: on a loaded machine that made the scenario fail.
		if _, err := pub.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			return res, err
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return res, fmt.Errorf("ceiling: %d of %d acknowledged: %w", acked.Load(), n, ctx.Err())
	}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(n) / res.Seconds
	return res, nil
}

// BoltRate measures bbolt's batched writes: n puts of an ekaci-sized row,
// 1,000 per fsynced transaction, as the projections write.
func BoltRate(dir string, n int) (Result, error) {
	res := Result{Scenario: "bbolt-batched", N: n}
	db, err := projection.Open(filepath.Join(dir, "bolt-rate.db"))
	if err != nil {
		return res, err
	}
	defer db.Close()
	value := []byte(strings.Repeat("x", 160))
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("rows"))
			if err != nil {
				return err
			}
			for j := i; j < min(i+1000, n); j++ {
				if err := b.Put(fmt.Appendf(nil, "%032d", j*7919%n), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(n) / res.Seconds
	return res, nil
}

// Schedule moves a generated graph of n derivations from discovery to all
// Completed(Success) with the no-op builder. Ingest is the time until the
// graph model has folded every discovered derivation with its edges and
// every root is Buildable; schedule is the time until all succeeded.
func Schedule(ctx context.Context, dir string, n int, seed uint64) (Result, error) {
	g := graphgen.Generate(graphgen.Params{N: n, Seed: seed})
	st := g.Stats()
	res := Result{Scenario: "schedule", N: n, Edges: st.Edges, Extra: map[string]float64{}}
	p, err := Start(ctx, Options{Dir: dir, Systems: []string{"x86_64-linux", "aarch64-linux"}})
	if err != nil {
		return res, err
	}
	defer p.Close()
	start := time.Now()
	last, err := p.Discover(ctx, g)
	if err != nil {
		return res, err
	}
	for p.IngressAt.Load() < last || p.Count("buildable") < int64(st.Roots) {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.Extra["ingest_s"] = time.Since(start).Seconds()
	if err := p.WaitCount(ctx, "build_succeeded", int64(n)); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(n) / res.Seconds
	if AtEnd != nil {
		AtEnd()
	}
	seq, err := p.Events.LastSeq(ctx)
	if err != nil {
		return res, err
	}
	// Events, plus a build request and a report per build.
	res.Extra["msgs_per_drv"] = float64(int64(seq)+2*int64(n)) / float64(n)
	return res, nil
}

// Propagate fails, for good, the root with the most derivations
// downstream, and measures the time from its final failure until every one
// of them is TransitiveFailure.
func Propagate(ctx context.Context, dir string, n int, seed uint64) (Result, error) {
	g := graphgen.Generate(graphgen.Params{N: n, Seed: seed})
	res := Result{Scenario: "propagate", N: n, Extra: map[string]float64{}}
	best, down := 0, []int(nil)
	// The earliest roots are the most depended on (the generator's Zipf
	// law); the first few hold the largest downstream.
	for id := 0; id < 5 && id < len(g.Nodes); id++ {
		if d := g.Downstream(id); len(d) > len(down) {
			best, down = id, d
		}
	}
	failID, _ := Discovered(g, best)
	// The root's failure waits until the whole graph is folded, so what
	// is measured is propagation through a known graph, not the rest of
	// the ingest.
	ingested := make(chan struct{})
	p, err := Start(ctx, Options{Dir: dir, Systems: []string{"x86_64-linux", "aarch64-linux"},
		Fail: func(id string, _ uint32) bool {
			if id != failID {
				return false
			}
			<-ingested
			return true
		}})
	if err != nil {
		return res, err
	}
	defer p.Close()
	last, err := p.Discover(ctx, g)
	if err != nil {
		close(ingested)
		return res, err
	}
	for p.IngressAt.Load() < last && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	close(ingested)
	if err := p.WaitCount(ctx, "build_failed", 1); err != nil {
		return res, err
	}
	start := time.Now()
	if Trace != nil {
		failedAt, _ := p.Events.LastSeq(ctx)
		tctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for tctx.Err() == nil {
				seq, _ := p.Events.LastSeq(tctx)
				fmt.Fprintf(Trace, "%6.2fs  ingress at %d (failure at ~%d)  log at %d  dependency_failed %d of %d\n",
					time.Since(start).Seconds(), p.IngressAt.Load(), failedAt, seq, p.Count("dependency_failed"), len(down))
				time.Sleep(250 * time.Millisecond)
			}
		}()
	}
	if err := p.WaitCount(ctx, "dependency_failed", int64(len(down))); err != nil {
		return res, err
	}
	end := time.Now()
	// From when the log stored the failure, not from when this loop saw
	// it: the propagation may have begun before the poll noticed.
	recs, _, err := p.Events.Load(ctx, eventlog.Drv, failID)
	if err != nil {
		return res, err
	}
	for _, r := range recs {
		if r.Fact == string(buildstate.KindBuildFailed) && r.Time.Before(start) {
			start = r.Time
		}
	}
	res.Seconds = end.Sub(start).Seconds()
	res.Rate = float64(len(down)) / res.Seconds
	res.Extra["downstream"] = float64(len(down))
	return res, nil
}
