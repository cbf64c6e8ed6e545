package checkrun

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

// Progress: while a job builds, its gate shows how its attributes stand
// (built, running, queued, failed), at most once per ProgressEvery. The
// publisher follows the derivation facts of the attributes of the jobs it
// reports on (not of their whole closures), through a durable consumer of
// its own, so a busy build never delays the gates' conclusions.

// DefaultProgressEvery is how often a gate's progress is sent at most.
const DefaultProgressEvery = 5 * time.Second

var (
	watchBucket = []byte("watch") // drv id -> jobset ids whose attribute it is
	attrsBucket = []byte("attrs") // jobset id -> attribute drv ids
	stateBucket = []byte("state") // drv id -> progress state
)

// progress states of an attribute's derivation.
const (
	progQueued  = ""
	progRunning = "running"
	progBuilt   = "built"
	progFailed  = "failed"
)

// progressState maps a derivation fact to where its attribute stands.
func progressState(fact string) (string, bool) {
	switch fact {
	case "build_started":
		return progRunning, true
	case "build_succeeded":
		return progBuilt, true
	case "build_failed", "dependency_failed", "blocked", "interrupted":
		return progFailed, true
	case "build_failed_retry", "requeued", "buildable":
		return progQueued, true
	}
	return "", false
}

// ProgressFilters are the derivation facts progress follows.
var ProgressFilters = []string{
	eventlog.FactFilter(eventlog.Drv, "build_started"), eventlog.FactFilter(eventlog.Drv, "build_succeeded"),
	eventlog.FactFilter(eventlog.Drv, "build_failed"), eventlog.FactFilter(eventlog.Drv, "build_failed_retry"),
	eventlog.FactFilter(eventlog.Drv, "dependency_failed"), eventlog.FactFilter(eventlog.Drv, "downstream_failed"),
	eventlog.FactFilter(eventlog.Drv, "blocked"), eventlog.FactFilter(eventlog.Drv, "interrupted"),
	eventlog.FactFilter(eventlog.Drv, "requeued"),
}

// maxRecent bounds the states kept of derivations no gate watches yet.
const maxRecent = 1 << 16

// recent remembers where the last maxRecent unwatched derivations stood:
// the progress consumer may read a derivation's facts before the main one
// has read the evaluation that makes it an attribute to watch.
type recent struct {
	mu    sync.Mutex // held across follow and watch, so neither misses the other
	state map[string]string
	order []string
}

func (r *recent) put(id, state string) {
	if r.state == nil {
		r.state = map[string]string{}
	}
	if _, ok := r.state[id]; !ok {
		if len(r.order) >= maxRecent {
			delete(r.state, r.order[0])
			r.order = r.order[1:]
		}
		r.order = append(r.order, id)
	}
	r.state[id] = state
}

// markDirty has a jobset's progress sent at the next tick.
func (p *Publisher) markDirty(jobsetID string) {
	p.dirtyMu.Lock()
	defer p.dirtyMu.Unlock()
	if p.dirty == nil {
		p.dirty = map[string]bool{}
	}
	p.dirty[jobsetID] = true
}

// watch records a jobset's attribute derivations, to follow them.
func (p *Publisher) watch(jobsetID string, attrs []*eventsv1.JobAttr) error {
	p.recent.mu.Lock()
	defer p.recent.mu.Unlock()
	return p.store.db.Update(func(tx *bolt.Tx) error {
		var ids []string
		if b := tx.Bucket(attrsBucket).Get([]byte(jobsetID)); b != nil {
			if err := json.Unmarshal(b, &ids); err != nil {
				return err
			}
		}
		have := map[string]bool{}
		for _, id := range ids {
			have[id] = true
		}
		for _, a := range attrs {
			id := a.GetDrvId()
			if id == "" || have[id] || a.GetDifference() == eventsv1.Difference_DIFFERENCE_REMOVED {
				continue
			}
			have[id] = true
			ids = append(ids, id)
			if st, ok := p.recent.state[id]; ok {
				if err := tx.Bucket(stateBucket).Put([]byte(id), []byte(st)); err != nil {
					return err
				}
				p.markDirty(jobsetID)
			}
			var js []string
			if b := tx.Bucket(watchBucket).Get([]byte(id)); b != nil {
				if err := json.Unmarshal(b, &js); err != nil {
					return err
				}
			}
			raw, _ := json.Marshal(append(js, jobsetID))
			if err := tx.Bucket(watchBucket).Put([]byte(id), raw); err != nil {
				return err
			}
		}
		raw, _ := json.Marshal(ids)
		return tx.Bucket(attrsBucket).Put([]byte(jobsetID), raw)
	})
}

// follow folds a batch of derivation facts and returns the jobsets whose
// attributes moved.
func (p *Publisher) follow(recs []eventlog.Record) (map[string]bool, error) {
	moved := map[string]bool{}
	p.recent.mu.Lock()
	defer p.recent.mu.Unlock()
	err := p.store.db.Update(func(tx *bolt.Tx) error {
		for _, rec := range recs {
			for t := range rec.Transitions() {
				state, ok := progressState(t.Fact)
				if !ok {
					continue
				}
				b := tx.Bucket(watchBucket).Get([]byte(t.ID))
				if b == nil {
					p.recent.put(t.ID, state)
					continue
				}
				var js []string
				if err := json.Unmarshal(b, &js); err != nil {
					return err
				}
				if err := tx.Bucket(stateBucket).Put([]byte(t.ID), []byte(state)); err != nil {
					return err
				}
				for _, j := range js {
					moved[j] = true
				}
			}
		}
		return nil
	})
	return moved, err
}

// counts tells how a jobset's attributes stand.
func (p *Publisher) counts(jobsetID string) (total int, by map[string]int, err error) {
	by = map[string]int{}
	err = p.store.db.View(func(tx *bolt.Tx) error {
		var ids []string
		if b := tx.Bucket(attrsBucket).Get([]byte(jobsetID)); b != nil {
			if err := json.Unmarshal(b, &ids); err != nil {
				return err
			}
		}
		total = len(ids)
		for _, id := range ids {
			by[string(tx.Bucket(stateBucket).Get([]byte(id)))]++
		}
		return nil
	})
	return total, by, err
}

// runProgress follows derivation facts and sends each moved gate's
// progress at most every ProgressEvery.
func (p *Publisher) runProgress(ctx context.Context) error {
	every := p.cfg.ProgressEvery
	if every <= 0 {
		every = DefaultProgressEvery
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p.dirtyMu.Lock()
			batch := p.dirty
			p.dirty = nil
			p.dirtyMu.Unlock()
			for jobsetID := range batch {
				if err := p.sendProgress(ctx, jobsetID); err != nil && ctx.Err() == nil {
					p.cfg.Logger.Warn().Err(err).Str("jobset", jobsetID).Msg("could not send progress")
				}
			}
		}
	}()
	defer func() { <-done }()
	return worker.RunBatch(ctx, p.cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.GitHubProgressDurable, Filters: ProgressFilters, Batch: 512, AckWait: p.cfg.AckWait,
	}, func(ctx context.Context, msgs []jetstream.Msg) []error {
		errs := make([]error, len(msgs))
		var recs []eventlog.Record
		for i, m := range msgs {
			rec, err := eventlog.DecodeFacts(m)
			if err != nil {
				errs[i] = worker.Permanent(err)
				continue
			}
			recs = append(recs, rec)
		}
		moved, err := p.follow(recs)
		if err != nil {
			for i := range errs {
				if errs[i] == nil {
					errs[i] = err
				}
			}
			return errs
		}
		for j := range moved {
			p.markDirty(j)
		}
		return errs
	}, p.cfg.Logger)
}

// sendProgress shows a building gate's progress (never on a concluded one).
func (p *Publisher) sendProgress(ctx context.Context, jobsetID string) error {
	js, ch, ok, err := p.jobsetOf(jobsetID)
	if !ok || err != nil {
		return err
	}
	total, by, err := p.counts(jobsetID)
	if err != nil || total == 0 {
		return err
	}
	summary := fmt.Sprintf("Attributes: **%d built**, %d running, %d queued, %d failed, of %d.", by[progBuilt], by[progRunning],
		by[progQueued], by[progFailed], total)
	if by[progFailed] > 0 {
		summary += "\n\nFailures are listed with their root causes when the job concludes."
	}
	return p.ensure(ctx, js.Change, ch, checkname.Job(js.Job), state{status: "in_progress", title: fmt.Sprintf("Building: %d of %d attributes done",
		by[progBuilt]+by[progFailed], total), summary: summary})
}
