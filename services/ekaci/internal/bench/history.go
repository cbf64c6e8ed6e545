package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/graphgen"
)

// HistoryChanges is how many consecutive changes the history scenario
// concludes on one data dir.
const HistoryChanges = 10

// historyShared is the share of each change's graph that the change before
// it had too.
const historyShared = 0.95

// attrsPerPart bounds the attributes one jobset fact lists, well under a
// NATS message (the evaluator cuts its parts by bytes; this is as many).
const attrsPerPart = 2000

// History concludes HistoryChanges consecutive changes on one data dir,
// each a graph of n derivations of which 95 % is the change before's: the
// last 5 % in dependency order (a set closed under dependents, as a change
// to a few packages renames everything above them) is new in each. Each
// change is submitted as the evaluator records it — every derivation of
// the closure appended with ExpectLast(0), so the known ones are refused,
// then its attributes (the graph's leaves) and jobset_evaluated — and is
// timed until its jobset_concluded, with the process's peak RSS reset
// before it (/proc/self/clear_refs) and read after. Then the pipeline is
// stopped and started again on the same data dir, and start-up is timed
// until a one-derivation change concludes.
func History(ctx context.Context, dir string, n int, seed uint64) (Result, error) {
	g := graphgen.Generate(graphgen.Params{N: n, Seed: seed})
	res := Result{Scenario: "history", N: n, Edges: g.Stats().Edges, Extra: map[string]float64{}}
	leaves := g.Leaves()
	cut := int(float64(n) * historyShared)
	opts := Options{Dir: dir, Systems: []string{"x86_64-linux", "aarch64-linux"}}
	p, err := Start(ctx, opts)
	if err != nil {
		return res, err
	}
	defer func() {
		if p != nil {
			p.Close()
		}
	}()
	for k := range HistoryChanges {
		resetPeakRSS()
		start := time.Now()
		ids, items := variant(g, k, cut)
		if err := p.submit(ctx, fmt.Sprintf("bench-%d", k), ids, items, leaves, int64(k+1)); err != nil {
			return res, fmt.Errorf("change %d: %w", k, err)
		}
		took, peak := time.Since(start).Seconds(), peakRSSMiB()
		res.Extra[fmt.Sprintf("change%d_s", k+1)] = took
		res.Extra[fmt.Sprintf("change%d_rss_mib", k+1)] = peak
		// What stays: the live heap after a collection (not timed), and
		// the derivations the ingress model holds in memory.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap := float64(ms.HeapAlloc) / (1 << 20)
		res.Extra[fmt.Sprintf("change%d_heap_mib", k+1)] = heap
		res.Extra[fmt.Sprintf("change%d_ingress_resident", k+1)] = float64(p.Ingress.Resident())
		if Trace != nil {
			fmt.Fprintf(Trace, "change %d: %.1f s, peak RSS %.0f MiB, live heap after it %.0f MiB, ingress resident %d\n", k+1, took, peak, heap, p.Ingress.Resident())
		}
	}
	if AtEnd != nil {
		AtEnd()
	}
	if err := p.Close(); err != nil {
		p = nil
		return res, fmt.Errorf("stop after %d changes: %w", HistoryChanges, err)
	}
	p = nil
	// Start-up: the same data dir, until a new one-derivation change has
	// concluded (every read model loaded and caught up, and one build).
	start := time.Now()
	if p, err = Start(ctx, opts); err != nil {
		return res, err
	}
	// The embedded server's share: it recovers the stream before Start returns.
	res.Extra["startup_server_s"] = time.Since(start).Seconds()
	probe := graphgen.Generate(graphgen.Params{N: 1, Seed: seed})
	ids, items := variant(probe, HistoryChanges, 0)
	if err := p.submit(ctx, "bench-probe", ids, items, []int{0}, HistoryChanges+1); err != nil {
		return res, fmt.Errorf("probe after restart: %w", err)
	}
	res.Extra["startup_s"] = time.Since(start).Seconds()
	first, last := res.Extra["change1_s"], res.Extra[fmt.Sprintf("change%d_s", HistoryChanges)]
	res.Seconds = last
	res.Extra["first_s"], res.Extra["last_s"] = first, last
	res.Extra["first_rss_mib"], res.Extra["last_rss_mib"] = res.Extra["change1_rss_mib"], res.Extra[fmt.Sprintf("change%d_rss_mib", HistoryChanges)]
	res.Extra["first_heap_mib"], res.Extra["last_heap_mib"] = res.Extra["change1_heap_mib"], res.Extra[fmt.Sprintf("change%d_heap_mib", HistoryChanges)]
	return res, nil
}

// variant is change k of g: the ids of its nodes and their discovered
// facts. Nodes below cut are the same in every change; the rest are
// renamed by k (k 0 keeps g's own names).
func variant(g *graphgen.Graph, k, cut int) ([]string, []eventlog.Item) {
	paths := make([]string, len(g.Nodes))
	ids := make([]string, len(g.Nodes))
	for i := range g.Nodes {
		if i < cut || k == 0 {
			paths[i] = DrvPath(g, i)
		} else {
			paths[i] = renamedPath(g, i, k)
		}
		ids[i], _ = eventlog.DrvID(paths[i])
	}
	items := make([]eventlog.Item, 0, len(g.Nodes))
	for i, nd := range g.Nodes {
		inputs := make([]string, len(nd.Inputs))
		for j, in := range nd.Inputs {
			inputs[j] = ids[in]
		}
		ev := &eventsv1.Event{Id: "discovered-" + ids[i], Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
			DrvPath: paths[i], Name: nd.Name, System: nd.System, FixedOutput: nd.FOD, InputDrvs: inputs,
			Outputs: map[string]string{"out": "/nix/store/" + ids[i] + "-" + nd.Name},
		}}}
		items = append(items, eventlog.Item{ID: ids[i], Event: ev, Expect: true, ExpectSeq: 0})
	}
	return ids, items
}

func renamedPath(g *graphgen.Graph, id, k int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint("ekaci-bench-change-", k, "-", id)))
	hash := make([]byte, 32)
	for i := range hash {
		hash[i] = nixBase32[sum[i]%32]
	}
	return fmt.Sprintf("/nix/store/%s-%s.drv", hash, g.Nodes[id].Name)
}

// submit records one change's jobset as the reader and the evaluator do
// and waits until the recorder has concluded concluded jobsets in all.
func (p *Pipeline) submit(ctx context.Context, name string, ids []string, items []eventlog.Item, attrs []int, concluded int64) error {
	jobset := name + "-js"
	created := &eventsv1.Event{Id: "created-" + jobset, Payload: &eventsv1.Event_JobsetCreated{JobsetCreated: &eventsv1.JobsetCreated{ChangeId: name, Job: "bench"}}}
	if _, err := p.Events.Append(ctx, jobset, created, eventlog.ExpectLast(0)); err != nil {
		return fmt.Errorf("jobset created: %w", err)
	}
	// The evaluator appends the whole closure; what the log knows is refused.
	for from := 0; from < len(items); from += 20000 {
		_, errs, err := p.Events.AppendMany(ctx, items[from:min(from+20000, len(items))])
		if err != nil {
			return fmt.Errorf("discover: %w", err)
		}
		for i, e := range errs {
			if e != nil && !errors.Is(e, eventlog.ErrConflict) {
				return fmt.Errorf("discover %s: %w", items[from+i].ID, e)
			}
		}
	}
	var list []*eventsv1.JobAttr
	for _, a := range attrs {
		list = append(list, &eventsv1.JobAttr{Attr: graphgen.Attr(a), DrvPath: items[a].Event.GetDrvDiscovered().GetDrvPath(), DrvId: ids[a]})
	}
	parts := 0
	for len(list) > attrsPerPart {
		ev := &eventsv1.Event{Id: fmt.Sprintf("attrs-%s-%d", jobset, parts), Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{
			ChangeId: name, Part: uint32(parts), Attrs: list[:attrsPerPart]}}}
		if _, err := p.Events.Append(ctx, jobset, ev); err != nil {
			return fmt.Errorf("attrs listed: %w", err)
		}
		list, parts = list[attrsPerPart:], parts+1
	}
	ev := &eventsv1.Event{Id: "evaluated-" + jobset, Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: name, Attrs: list, DrvCount: uint32(len(items)), AttrParts: uint32(parts), AttrCount: uint32(len(attrs)),
	}}}
	if _, err := p.Events.Append(ctx, jobset, ev); err != nil {
		return fmt.Errorf("evaluated: %w", err)
	}
	c, err := p.watchJS.CreateOrUpdateConsumer(ctx, eventlog.EventsStream, jetstream.ConsumerConfig{
		Durable: "bench-count-jobset-concluded", FilterSubject: eventlog.FactFilter(eventlog.Jobset, "concluded"),
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return err
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		info, err := c.Info(ctx)
		if err == nil && int64(info.NumPending) >= concluded {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d jobsets concluded (info %v, %v): %w", concluded, info, err, ctx.Err())
		case <-t.C:
		}
	}
}

// resetPeakRSS makes the kernel's peak RSS (VmHWM) start again from the
// current RSS.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSSMiB reads VmHWM, the peak RSS since the last reset.
func peakRSSMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
