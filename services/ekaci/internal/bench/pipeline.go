// Package bench measures ekaci's scheduler and its surroundings at
// nixpkgs scale, each figure next to a baseline measured in the same run.
package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/graphgen"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natsembed"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/builder"
	"github.com/ekaci/ekaci/services/ingress"
	"github.com/ekaci/ekaci/services/recorder"
	"github.com/ekaci/ekaci/services/router"
)

const nixBase32 = "0123456789abcdfghijklmnpqrsvwxyz"

// DrvPath is a made-up but well-formed store path for node id.
func DrvPath(g *graphgen.Graph, id int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint("ekaci-bench-", id)))
	hash := make([]byte, 32)
	for i := range hash {
		hash[i] = nixBase32[sum[i]%32]
	}
	return fmt.Sprintf("/nix/store/%s-%s.drv", hash, g.Nodes[id].Name)
}

// Discovered is the event the evaluator records for node id.
func Discovered(g *graphgen.Graph, id int) (string, *eventsv1.Event) {
	n := g.Nodes[id]
	path := DrvPath(g, id)
	drvID, _ := eventlog.DrvID(path)
	inputs := make([]string, len(n.Inputs))
	for i, in := range n.Inputs {
		inputs[i], _ = eventlog.DrvID(DrvPath(g, in))
	}
	return drvID, &eventsv1.Event{Id: "discovered-" + drvID, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
		DrvPath: path, Name: n.Name, System: n.System, FixedOutput: n.FOD, InputDrvs: inputs,
		Outputs: map[string]string{"out": "/nix/store/" + drvID + "-" + n.Name},
	}}}
}

// Pipeline is a running scheduler: ingress, router, a no-op builder and
// the recorder, each on its own connection to an embedded NATS.
type Pipeline struct {
	Server *natsembed.Server
	Events *eventlog.Log // the "evaluator" connection
	cancel context.CancelFunc
	group  *errgroup.Group
	conns  []*nats.Conn

	watchJS jetstream.JetStream
	mu      sync.Mutex
	facts   map[string]jetstream.Consumer
	// downstream sums the derivations listed by the downstream_failed
	// facts read so far (from the consumer of that fact, which is pulled).
	downstream int64
	countErr   error // the last failure to count, reported by WaitCount
	// IngressAt is the stream position the ingress graph has folded.
	IngressAt atomic.Uint64
	// Ingress is the ingress model (its Resident, for the history scenario).
	Ingress *ingress.Graph
}

// Options of a pipeline run.
type Options struct {
	Dir        string
	Systems    []string
	SyncAlways bool
	// Fail picks the no-op builder's failures.
	Fail func(drvID string, attempt uint32) bool
	// IngressLimits shape the facts ingress appends (zero: its defaults).
	IngressLimits ingress.Limits
}

// Start runs the pipeline's stages.
func Start(ctx context.Context, o Options) (*Pipeline, error) {
	srv, err := natsembed.Start(natsembed.Config{DataDir: filepath.Join(o.Dir, "nats"), Port: -1, SyncAlways: o.SyncAlways, Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Server: srv, Ingress: ingress.NewGraph(zerolog.Nop())}
	connect := func(name string) (*eventlog.Log, *nats.Conn, error) {
		nc, js, err := service.Connect(ctx, srv.ClientURL(), name, eventlog.StreamOptions{})
		if err != nil {
			return nil, nil, err
		}
		p.conns = append(p.conns, nc)
		return eventlog.New(js), nc, nil
	}
	if p.Events, _, err = connect("bench"); err != nil {
		p.Close()
		return nil, err
	}
	// Facts are counted by the server: a pull consumer per fact that is
	// never pulled from has every matching event pending, and its info says
	// how many. Watching every event through a consumer of our own would
	// add a fourth delivery of each to what is measured.
	wlog, _, err := connect("bench-watch")
	if err != nil {
		p.Close()
		return nil, err
	}
	p.watchJS = wlog.JetStream()
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	g, gctx := errgroup.WithContext(rctx)
	p.group = g
	nop := zerolog.Nop()
	topo := machines.Topology{Systems: o.Systems, MaxJobs: 64, FODMaxJobs: 16}
	// As the all-in-one wires them: ingress and recorder share a feed.
	feed := projection.NewFeed(p.Events, nop, ingress.ReadModel, recorder.ReadModel)
	stages := []struct {
		name string
		run  func(ctx context.Context, log *eventlog.Log, nc *nats.Conn) error
	}{
		{"ingress", func(ctx context.Context, log *eventlog.Log, _ *nats.Conn) error {
			return ingress.Run(ctx, ingress.Config{Events: log, DataDir: o.Dir, Logger: nop, Limits: o.IngressLimits, Feed: feed, Applied: func(seq uint64) { p.IngressAt.Store(seq) }, Graph: p.Ingress})
		}},
		{"router", func(ctx context.Context, log *eventlog.Log, _ *nats.Conn) error {
			return router.Run(ctx, router.Config{Events: log, Logger: nop, Routes: topo.Routes()})
		}},
		{"builder", func(ctx context.Context, log *eventlog.Log, nc *nats.Conn) error {
			return builder.Run(ctx, builder.Config{Events: log, Conn: nc, Logger: nop, Name: "noop", Pools: topo.Pools(),
				Noop: &builder.Noop{Fail: o.Fail}, BuildLogDir: filepath.Join(o.Dir, "logs")})
		}},
		{"recorder", func(ctx context.Context, log *eventlog.Log, _ *nats.Conn) error {
			return recorder.Run(ctx, recorder.Config{Events: log, DataDir: o.Dir, Logger: nop, Feed: feed})
		}},
	}
	for _, st := range stages {
		log, nc, err := connect(st.name)
		if err != nil {
			p.Close()
			return nil, err
		}
		g.Go(func() error {
			if err := st.run(gctx, log, nc); err != nil && gctx.Err() == nil {
				return fmt.Errorf("%s: %w", st.name, err)
			}
			return nil
		})
	}
	return p, nil
}

// Attach watches a scheduler that runs elsewhere (its stages in processes
// of their own, ekaci-bench-mesh): a pipeline with the "evaluator"
// connection and the fact counters on the NATS at url, and no stages or
// server of its own. Streams are provisioned as streams says, as the
// stages do.
func Attach(ctx context.Context, url string, streams eventlog.StreamOptions) (*Pipeline, error) {
	p := &Pipeline{}
	for _, name := range []string{"bench", "bench-watch"} {
		nc, js, err := service.Connect(ctx, url, name, streams)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.conns = append(p.conns, nc)
		if p.Events == nil {
			p.Events = eventlog.New(js)
		} else {
			p.watchJS = js
		}
	}
	return p, nil
}

func (p *Pipeline) consumer(ctx context.Context, fact string) (jetstream.Consumer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.facts[fact]; ok {
		return c, nil
	}
	c, err := p.watchJS.CreateOrUpdateConsumer(ctx, eventlog.EventsStream, jetstream.ConsumerConfig{
		// Durable: an ephemeral consumer nobody pulls from is deleted
		// after a few seconds.
		Durable: "bench-count-" + fact, FilterSubject: eventlog.FactFilter(eventlog.Drv, fact),
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	if p.facts == nil {
		p.facts = map[string]jetstream.Consumer{}
	}
	p.facts[fact] = c
	return c, nil
}

// Count is how many events of a fact were appended so far (-1 when the
// server cannot say; WaitCount reports why). For dependency_failed it
// includes the derivations listed by downstream_failed facts, each of
// which stands for one.
func (p *Pipeline) Count(fact string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.consumer(ctx, fact)
	if err == nil {
		var info *jetstream.ConsumerInfo
		if info, err = c.Info(ctx); err == nil {
			n := int64(info.NumPending)
			if fact == string(buildstate.KindDependencyFailed) {
				n += p.listedDownstream(ctx)
			}
			return n
		}
	}
	p.mu.Lock()
	p.countErr = fmt.Errorf("count %s: %w", fact, err)
	p.mu.Unlock()
	return -1
}

// listedDownstream reads the downstream_failed facts not read yet and
// returns how many derivations all of them list.
func (p *Pipeline) listedDownstream(ctx context.Context) int64 {
	c, err := p.consumer(ctx, string(buildstate.KindDownstreamFailed))
	if err != nil {
		return 0
	}
	for {
		batch, err := c.FetchNoWait(64)
		if err != nil {
			break
		}
		got := 0
		for m := range batch.Messages() {
			got++
			rec, err := eventlog.DecodeFacts(m)
			if err != nil {
				continue
			}
			listed := int64(0)
			for t := range rec.Transitions() {
				if t.RecordedOn != "" {
					listed++
				}
			}
			p.mu.Lock()
			p.downstream += listed
			p.mu.Unlock()
		}
		if got == 0 {
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downstream
}

// WaitCount waits until fact has been appended n times.
func (p *Pipeline) WaitCount(ctx context.Context, fact string, n int64) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for p.Count(fact) < n {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			last := p.countErr
			p.mu.Unlock()
			return fmt.Errorf("%s: %d of %d (last error: %v): %w", fact, p.Count(fact), n, last, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close stops the stages and the server.
func (p *Pipeline) Close() error {
	var err error
	if p.cancel != nil {
		p.cancel()
		err = p.group.Wait()
	}
	for _, nc := range p.conns {
		nc.Close()
	}
	if p.Server != nil {
		_ = p.Server.Shutdown(context.Background())
	}
	return err
}

// Discover records every node of g as the evaluator does, inputs first,
// and returns the stream position of the last one.
func (p *Pipeline) Discover(ctx context.Context, g *graphgen.Graph) (uint64, error) {
	// Each node's path and id once, not once per edge: the evaluator has
	// them from the .drv files it read.
	paths := make([]string, len(g.Nodes))
	ids := make([]string, len(g.Nodes))
	for i := range g.Nodes {
		paths[i] = DrvPath(g, i)
		ids[i], _ = eventlog.DrvID(paths[i])
	}
	items := make([]eventlog.Item, 0, len(g.Nodes))
	for i, n := range g.Nodes {
		inputs := make([]string, len(n.Inputs))
		for j, in := range n.Inputs {
			inputs[j] = ids[in]
		}
		ev := &eventsv1.Event{Id: "discovered-" + ids[i], Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
			DrvPath: paths[i], Name: n.Name, System: n.System, FixedOutput: n.FOD, InputDrvs: inputs,
			Outputs: map[string]string{"out": "/nix/store/" + ids[i] + "-" + n.Name},
		}}}
		items = append(items, eventlog.Item{ID: ids[i], Event: ev, Expect: true, ExpectSeq: 0})
	}
	got, errs, err := p.Events.AppendMany(ctx, items)
	if err != nil {
		return 0, err
	}
	var last uint64
	for i, e := range errs {
		if e != nil {
			return 0, fmt.Errorf("discover %s: %w", items[i].ID, e)
		}
		last = max(last, got[i].Seq)
	}
	return last, nil
}
