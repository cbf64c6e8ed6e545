// Package evaluator evaluates each jobset's Nix file into attribute →
// derivation, compares it with the base commit, walks the whole closure by
// reading .drv files, and records every derivation once, inputs before
// their dependents, with what routing needs. A derivation already known
// (from another jobset or change) is not recorded again: it is one
// aggregate, whoever discovers it first.
//
// It decides what a jobset's attributes are and which derivations they need
// (jobset_evaluated, drv_discovered), or that the jobset did not evaluate.
package evaluator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/binarycache"
	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/telemetry"
	"github.com/ekaci/ekaci/services/evaluator/internal/closure"
	"github.com/ekaci/ekaci/services/evaluator/internal/gcroots"
	"github.com/ekaci/ekaci/services/evaluator/internal/nixeval"
)

// Config wires the stage.
type Config struct {
	Events     *eventlog.Log
	Logger     zerolog.Logger
	NixOptions []string // e.g. {"substituters", ""} offline
	// EvalTimeout bounds the evaluation of one job (head and base
	// together; the Nix processes are killed with their whole tree when it
	// passes): 0 is DefaultEvalTimeout, < 0 no limit.
	EvalTimeout time.Duration
	// EvalMemoryLimit bounds each Nix process of an evaluation (its
	// address space, RLIMIT_AS), in bytes: 0 is DefaultEvalMemoryLimit,
	// < 0 no limit.
	EvalMemoryLimit int64
	// GCRootsDir, when set, holds the GC roots of the evaluated .drv files
	// (a Nix GC between evaluation and build would delete them):
	//
	//	<GCRootsDir>/<change id>/<jobset id>/drv, drv-2, drv-3, ...
	//
	// symlinks to each attribute's .drv (registered by Nix as indirect
	// roots in /nix/var/nix/gcroots/auto), the change id being
	// JobsetCreated.change_id and the jobset id the aggregate's id, both
	// subject tokens (never raw input). Removing <GCRootsDir>/<change id>
	// when the change concludes unroots them all; the next GC drops the
	// stale links. Empty: no roots.
	GCRootsDir string
	// Cache, when set, is the mesh's binary cache: each job's .drv closure
	// is pushed to it before the derivations are recorded, so builders
	// with Nix stores of their own can fetch what they are asked to build.
	Cache *binarycache.Cache
	// Metrics, when set, counts the jobsets given up (GaveUp).
	Metrics *telemetry.Metrics

	// partBudget, when set, replaces half the max payload as the bytes of
	// attributes per fact (tests, to get parts without 10,000 attributes).
	partBudget int
}

// Limits of untrusted evaluation, by default.
const (
	DefaultEvalTimeout     = 30 * time.Minute
	DefaultEvalMemoryLimit = 8 << 30
)

// Bounds of free text in facts, in bytes: an attribute's error, and the
// whole of an eval_failed message (it lists attributes' errors).
const (
	maxAttrError   = 2000
	maxFailure     = 16 << 10
	maxAttrDisplay = 256
)

// concurrency is how many jobsets are evaluated at once.
const concurrency = 2

// errTimeLimit is the cause of a job's context ending at its time limit.
var errTimeLimit = errors.New("evaluation time limit")

func (c Config) withDefaults() Config {
	if c.EvalTimeout == 0 {
		c.EvalTimeout = DefaultEvalTimeout
	}
	if c.EvalMemoryLimit == 0 {
		c.EvalMemoryLimit = DefaultEvalMemoryLimit
	}
	return c
}

// Run evaluates jobsets until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	handle := func(ctx context.Context, m jetstream.Msg) error {
		rec, err := eventlog.DecodeMsg(m)
		if err != nil {
			return worker.Permanent(err)
		}
		js := rec.Event.GetJobsetCreated()
		if js == nil {
			return nil
		}
		return evaluate(ctx, cfg, rec, js)
	}
	return worker.Run(ctx, cfg.Events.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: eventlog.EvaluatorDurable,
		Filters: []string{eventlog.FactFilter(eventlog.Jobset, "created")},
		AckWait: time.Minute, Concurrency: concurrency, MaxDeliver: 5,
		// One message per slot: a waiting jobset.created must not outlast
		// its ack wait behind a long evaluation and be handled twice.
		MaxAckPending: concurrency,
		GiveUp:        func(ctx context.Context, m jetstream.Msg, cause error) error { return giveUp(ctx, cfg, m, cause) },
		GaveUp:        cfg.Metrics.CountGiveUp,
	}, handle, cfg.Logger)
}

// giveUp concludes a jobset whose jobset.created the worker stops handling
// (a permanent error, or its last delivery failed) with eval_failed, so its
// change concludes.
func giveUp(ctx context.Context, cfg Config, m jetstream.Msg, cause error) error {
	rec, err := eventlog.DecodeMsg(m)
	if err != nil {
		return fmt.Errorf("give up on %s: %w", m.Subject(), err)
	}
	js := rec.Event.GetJobsetCreated()
	if js == nil {
		return nil
	}
	msg := text.Bound("evaluation could not be completed: "+cause.Error(), maxFailure)
	cfg.Logger.Warn().Str("jobset", rec.ID).Str("job", js.GetJob()).Str("error", msg).Msg("evaluation given up")
	return record(ctx, cfg, rec, js, nil, evalFailedEvent(rec.ID, js, msg))
}

func evalFailedEvent(jobsetID string, js *eventsv1.JobsetCreated, msg string) *eventsv1.Event {
	return &eventsv1.Event{Id: eventlog.EvalFailedID(jobsetID), Payload: &eventsv1.Event_JobsetEvalFailed{
		JobsetEvalFailed: &eventsv1.JobsetEvalFailed{ChangeId: js.GetChangeId(), Error: text.Bound(msg, maxFailure)}}}
}

// history is what the jobset's aggregate holds of the evaluator's facts:
// created, then attrs_listed parts in order, then evaluated or eval_failed
// (then the recorder's concluded).
type history struct {
	last  uint64 // the aggregate's last sequence, for ExpectLast
	parts map[uint32]*eventsv1.JobsetAttrsListed
	done  bool // evaluated or eval_failed is there
}

func loadHistory(ctx context.Context, cfg Config, jobsetID string) (history, error) {
	recs, last, err := cfg.Events.Load(ctx, eventlog.Jobset, jobsetID)
	if err != nil {
		return history{}, fmt.Errorf("load jobset %s: %w", jobsetID, err)
	}
	h := history{last: last, parts: map[uint32]*eventsv1.JobsetAttrsListed{}}
	for _, r := range recs {
		switch p := r.Event.GetPayload().(type) {
		case *eventsv1.Event_JobsetAttrsListed:
			h.parts[p.JobsetAttrsListed.GetPart()] = p.JobsetAttrsListed
		case *eventsv1.Event_JobsetEvaluated, *eventsv1.Event_JobsetEvalFailed:
			h.done = true
		}
	}
	return h, nil
}

// recordAttempts bounds the re-reads after a conflict; each conflict means
// another writer appended to the jobset meanwhile, which happens only when
// two deliveries of one jobset.created race.
const recordAttempts = 5

// record appends the evaluation's facts (the parts, then terminal) on the
// jobset, each expecting the aggregate's last sequence, so that a replay
// after the duplicate window lands nothing. A jobset already evaluated or
// failed is left as it is; parts already there (an earlier attempt stopped
// midway) are not appended again, and when they differ from these parts
// the jobset fails instead: its attributes would be a mix of two
// evaluations. On a conflict, it re-reads and re-decides.
func record(ctx context.Context, cfg Config, rec eventlog.Record, js *eventsv1.JobsetCreated, parts []*eventsv1.Event, terminal *eventsv1.Event) error {
	jobsetID := rec.ID
	for range recordAttempts {
		h, err := loadHistory(ctx, cfg, jobsetID)
		if err != nil {
			return err
		}
		if h.done {
			cfg.Logger.Info().Str("jobset", jobsetID).Msg("jobset already evaluated; nothing recorded again")
			return nil
		}
		facts := append(append([]*eventsv1.Event{}, parts...), terminal)
		for n := range h.parts {
			if terminal.GetJobsetEvaluated() == nil {
				break // a failure concludes whatever parts landed
			}
			if int(n) >= len(parts) || !proto.Equal(h.parts[n], parts[n].GetJobsetAttrsListed()) {
				facts = []*eventsv1.Event{evalFailedEvent(jobsetID, js, "evaluating again (after a restart or a retry) listed other attributes than the parts already recorded: is the evaluation deterministic?")}
				break
			}
		}
		conflict := false
		for _, ev := range facts {
			if p := ev.GetJobsetAttrsListed(); p != nil && h.parts[p.GetPart()] != nil {
				continue // landed before, the same
			}
			ev.CausationId, ev.CorrelationId = rec.Event.GetId(), js.GetChangeId()
			a, err := cfg.Events.Append(ctx, jobsetID, ev, eventlog.ExpectLast(h.last))
			if errors.Is(err, eventlog.ErrConflict) || err == nil && a.Duplicate {
				conflict = true
				break
			}
			if err != nil {
				return err
			}
			h.last = a.Seq
		}
		if !conflict {
			return nil
		}
	}
	return fmt.Errorf("record the evaluation of jobset %s: it changed under each of %d attempts", jobsetID, recordAttempts)
}

func evaluate(ctx context.Context, cfg Config, rec eventlog.Record, js *eventsv1.JobsetCreated) error {
	start := time.Now()
	jobsetID := rec.ID
	log := cfg.Logger.With().Str("jobset", jobsetID).Str("job", js.GetJob()).Logger()
	// A jobset.created delivered again (a redelivery, a replay long after)
	// decides nothing twice, and is not evaluated again for nothing.
	if h, err := loadHistory(ctx, cfg, jobsetID); err != nil {
		return err
	} else if h.done {
		log.Info().Msg("jobset already evaluated; not evaluating again")
		return nil
	}
	evalFailed := func(msg string) error {
		msg = text.Bound(msg, maxFailure)
		log.Warn().Str("error", msg).Msg("evaluation failed")
		return record(ctx, cfg, rec, js, nil, evalFailedEvent(jobsetID, js, msg))
	}
	jctx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.EvalTimeout > 0 {
		jctx, cancel = context.WithTimeoutCause(ctx, cfg.EvalTimeout, errTimeLimit)
	}
	defer cancel()
	// overLimit names the limit an evaluation error is about, if any.
	overLimit := func(err error) (string, bool) {
		switch {
		case errors.Is(err, nixeval.ErrMemoryLimit):
			return fmt.Sprintf("evaluation exceeded its memory limit of %s", formatBytes(cfg.EvalMemoryLimit)), true
		case ctx.Err() == nil && errors.Is(context.Cause(jctx), errTimeLimit):
			return fmt.Sprintf("evaluation exceeded its time limit of %s", cfg.EvalTimeout), true
		}
		return "", false
	}
	opts := nixeval.Options{Dir: js.GetHeadWorktree(), File: js.GetFile(), Attr: js.GetAttr(), Args: js.GetArgs(), NixOptions: cfg.NixOptions, MemoryLimit: max(cfg.EvalMemoryLimit, 0)}
	head, err := nixeval.Evaluate(jctx, opts)
	if err != nil {
		if msg, ok := overLimit(err); ok {
			return evalFailed(msg)
		}
		if ctx.Err() != nil {
			return err
		}
		return evalFailed(err.Error())
	}
	if msg, ok := failures(head); ok && !js.GetAllowEvalFailures() {
		return evalFailed(msg)
	}
	var base map[string]string
	if js.GetBaseWorktree() != "" {
		opts.Dir = js.GetBaseWorktree()
		battrs, err := nixeval.Evaluate(jctx, opts)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// A base that does not evaluate (within the limits: they hold
			// for head and base together) makes every attribute new.
			if msg, ok := overLimit(err); ok {
				err = errors.New(msg)
			}
			log.Warn().Err(err).Msg("base commit does not evaluate; every attribute counts as new")
		}
		base = map[string]string{}
		for _, a := range battrs {
			base[a.Path] = a.DrvPath
		}
	}
	attrs, roots, err := compare(head, base)
	if err != nil {
		return worker.Permanent(err)
	}
	budget := cfg.partBudget
	if budget <= 0 {
		budget = int(cfg.Events.JetStream().Conn().MaxPayload() / 2)
	}
	// An attribute that cannot fit a fact (a name of a megabyte) fails the
	// job now rather than every append after it; 4 KiB is left for the
	// rest of the fact.
	room := int(cfg.Events.JetStream().Conn().MaxPayload()) - 4<<10
	for _, a := range attrs {
		if size := eventlog.JSONSize(a); size > room {
			return evalFailed(fmt.Sprintf("attribute %s takes %d bytes, more than a fact holds (%d)", text.Bound(displayAttr(a.GetAttr()), maxAttrDisplay), size, room))
		}
	}
	drvs, err := closure.Walk(ctx, roots)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return evalFailed(fmt.Sprintf("reading the derivation closure: %v", err))
	}
	// Rooted once the closure is read: a .drv that is gone says so in the
	// walk's words (which the user can act on), not in nix-instantiate's.
	if cfg.GCRootsDir != "" && len(roots) > 0 {
		changeID := js.GetChangeId()
		if !eventlog.ValidToken(changeID) {
			return evalFailed(fmt.Sprintf("change id %q is not a token; it cannot name a directory", text.Bound(changeID, maxAttrDisplay)))
		}
		if err := gcroots.Add(ctx, filepath.Join(cfg.GCRootsDir, changeID, jobsetID), roots, cfg.NixOptions); err != nil {
			return err
		}
	}
	// Pushed before anything is discovered: a builder with a store of its
	// own is sent these .drv files only once the facts are recorded.
	if cfg.Cache != nil && len(roots) > 0 {
		if err := cfg.Cache.PushDerivations(ctx, roots); err != nil {
			return err // retried: the cache or Nix, not the job
		}
	}
	if err := discover(ctx, cfg, drvs); err != nil {
		return err
	}
	log.Info().Int("attrs", len(attrs)).Int("drvs", len(drvs)).Dur("took", time.Since(start)).Msg("evaluated")
	// A job too large for one message lists its attributes in parts first.
	split := splitAttrs(attrs, budget)
	var parts []*eventsv1.Event
	for i, part := range split[:len(split)-1] {
		parts = append(parts, &eventsv1.Event{Id: eventlog.AttrsListedID(jobsetID, uint32(i)), Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{
			ChangeId: js.GetChangeId(), Part: uint32(i), Attrs: part,
		}}})
	}
	return record(ctx, cfg, rec, js, parts, &eventsv1.Event{Id: eventlog.EvaluatedID(jobsetID), Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: js.GetChangeId(), Attrs: split[len(split)-1], DrvCount: uint32(len(drvs)), DurationMs: time.Since(start).Milliseconds(),
		AttrParts: uint32(len(split) - 1), AttrCount: uint32(len(attrs)),
	}}})
}

// failures describes the attributes that failed to evaluate, within
// maxFailure bytes (each error within maxAttrError); false when none did.
func failures(attrs []nixeval.Attr) (string, bool) {
	var failed []nixeval.Attr
	for _, a := range attrs {
		if a.Error != "" {
			failed = append(failed, a)
		}
	}
	if len(failed) == 0 {
		return "", false
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d attribute(s) failed to evaluate and allow_eval_failures is false:", len(failed))
	for i, a := range failed {
		line := "\n" + text.Bound(displayAttr(a.Path), maxAttrDisplay) + ": " + text.Bound(a.Error, maxAttrError)
		// Room is kept for the note on how many were left out.
		if b.Len()+len(line) > maxFailure-64 {
			fmt.Fprintf(&b, "\n… and %d more", len(failed)-i)
			break
		}
		b.WriteString(line)
	}
	return text.Bound(b.String(), maxFailure), true
}

// formatBytes says n in GiB or MiB when it is a whole number of them.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// splitAttrs cuts attrs into parts of at most budget bytes of JSON each
// (at least one attribute a part), in order; there is always one part.
func splitAttrs(attrs []*eventsv1.JobAttr, budget int) [][]*eventsv1.JobAttr {
	parts := [][]*eventsv1.JobAttr{nil}
	used := 0
	for _, a := range attrs {
		size := eventlog.JSONSize(a) + 1
		if used+size > budget && len(parts[len(parts)-1]) > 0 {
			parts = append(parts, nil)
			used = 0
		}
		parts[len(parts)-1] = append(parts[len(parts)-1], a)
		used += size
	}
	return parts
}

func displayAttr(p string) string {
	if p == "" {
		return "(top level)"
	}
	return p
}

// compare classifies head's attributes against base (nil: no base) and
// lists the derivations to walk. Removed attributes are listed too.
func compare(head []nixeval.Attr, base map[string]string) ([]*eventsv1.JobAttr, []string, error) {
	var attrs []*eventsv1.JobAttr
	var roots []string
	seen := map[string]bool{}
	for _, a := range head {
		ja := &eventsv1.JobAttr{Attr: a.Path, DrvPath: a.DrvPath, EvalError: text.Bound(a.Error, maxAttrError)}
		seen[a.Path] = true
		if a.DrvPath != "" {
			id, err := eventlog.DrvID(a.DrvPath)
			if err != nil {
				return nil, nil, fmt.Errorf("attribute %s: %w", a.Path, err)
			}
			ja.DrvId = id
			roots = append(roots, a.DrvPath)
		}
		if base != nil {
			// An attribute that fails to evaluate on both sides is
			// unchanged; one that fails on one side only is changed.
			switch b, ok := base[a.Path]; {
			case !ok:
				ja.Difference = eventsv1.Difference_DIFFERENCE_NEW
			case b != a.DrvPath:
				ja.Difference = eventsv1.Difference_DIFFERENCE_CHANGED
			default:
				ja.Difference = eventsv1.Difference_DIFFERENCE_UNCHANGED
			}
		}
		attrs = append(attrs, ja)
	}
	for p, drv := range base {
		if !seen[p] {
			attrs = append(attrs, &eventsv1.JobAttr{Attr: p, DrvPath: drv, Difference: eventsv1.Difference_DIFFERENCE_REMOVED})
		}
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].GetAttr() < attrs[j].GetAttr() })
	return attrs, roots, nil
}

// discover records each derivation of the closure once, inputs first. The
// append expects the aggregate to be new; a conflict means another jobset
// recorded it first.
func discover(ctx context.Context, cfg Config, drvs []closure.Drv) error {
	var outs []string
	for _, d := range drvs {
		for _, o := range d.Outputs {
			outs = append(outs, o)
		}
	}
	invalid, err := closure.Invalid(ctx, outs)
	if err != nil {
		return err
	}
	for _, d := range drvs {
		valid := len(d.Outputs) > 0
		for _, o := range d.Outputs {
			if invalid[o] {
				valid = false
			}
		}
		inputs := make([]string, 0, len(d.InputDrvs))
		for _, in := range d.InputDrvs {
			id, err := eventlog.DrvID(in)
			if err != nil {
				return worker.Permanent(err)
			}
			inputs = append(inputs, id)
		}
		// A .drv's system and features are any bytes its author chose: as
		// valid UTF-8 of a sane length they still name no builder (the
		// derivation is unsatisfiable), but the fact can be written.
		features := make([]string, len(d.RequiredSystemFeatures))
		for i, f := range d.RequiredSystemFeatures {
			features[i] = text.Bound(f, maxAttrDisplay)
		}
		ev := &eventsv1.Event{Id: eventlog.DiscoveredID(d.ID), Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
			DrvPath: d.Path, Name: d.Name, System: text.Bound(d.System, maxAttrDisplay), Outputs: d.Outputs, FixedOutput: d.FixedOutput,
			PreferLocalBuild: d.PreferLocalBuild, RequiredSystemFeatures: features,
			InputDrvs: inputs, OutputsValid: valid,
		}}}
		if _, err := cfg.Events.Append(ctx, d.ID, ev, eventlog.ExpectLast(0)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	return nil
}
