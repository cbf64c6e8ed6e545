// Package evaluator evaluates each jobset's Nix file into attribute →
// derivation, compares it with the base commit, walks the whole closure by
// reading .drv files, and records every derivation once, inputs before
// their dependents, with what routing needs. A derivation already known
// (from another jobset or change) is not recorded again: it is one
// aggregate, whoever discovers it first.
package evaluator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/services/evaluator/internal/closure"
	"github.com/ekaci/ekaci/services/evaluator/internal/nixeval"
)

// Config wires the stage.
type Config struct {
	Log        *eventlog.Log
	Logger     zerolog.Logger
	NixOptions []string // e.g. {"substituters", ""} offline
}

// Run evaluates jobsets until ctx ends.
func Run(ctx context.Context, cfg Config) error {
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
	return worker.Run(ctx, cfg.Log.JetStream(), worker.Config{
		Stream: eventlog.EventsStream, Durable: "evaluator",
		Filters: []string{eventlog.FactFilter(eventlog.Jobset, "created")},
		AckWait: time.Minute, Concurrency: 2, MaxDeliver: 5,
	}, handle, cfg.Logger)
}

func evaluate(ctx context.Context, cfg Config, rec eventlog.Record, js *eventsv1.JobsetCreated) error {
	start := time.Now()
	jobsetID := rec.ID
	log := cfg.Logger.With().Str("jobset", jobsetID).Str("job", js.GetJob()).Logger()
	emit := func(ev *eventsv1.Event) error {
		ev.CausationId, ev.CorrelationId = rec.Event.GetId(), js.GetChangeId()
		_, err := cfg.Log.Append(ctx, jobsetID, ev)
		return err
	}
	evalFailed := func(msg string) error {
		log.Warn().Str("error", msg).Msg("evaluation failed")
		return emit(&eventsv1.Event{Id: "eval-failed-" + jobsetID, Payload: &eventsv1.Event_JobsetEvalFailed{
			JobsetEvalFailed: &eventsv1.JobsetEvalFailed{ChangeId: js.GetChangeId(), Error: msg}}})
	}
	opts := nixeval.Options{Dir: js.GetHeadWorktree(), File: js.GetFile(), Attr: js.GetAttr(), Args: js.GetArgs(), NixOptions: cfg.NixOptions}
	head, err := nixeval.Evaluate(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return evalFailed(err.Error())
	}
	var errs []string
	for _, a := range head {
		if a.Error != "" {
			errs = append(errs, fmt.Sprintf("%s: %s", displayAttr(a.Path), a.Error))
		}
	}
	if len(errs) > 0 && !js.GetAllowEvalFailures() {
		return evalFailed(fmt.Sprintf("%d attribute(s) failed to evaluate and allow_eval_failures is false:\n%s", len(errs), strings.Join(errs, "\n")))
	}
	var base map[string]string
	if js.GetBaseWorktree() != "" {
		opts.Dir = js.GetBaseWorktree()
		battrs, err := nixeval.Evaluate(ctx, opts)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// A base that does not evaluate makes every attribute new.
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
	drvs, err := closure.Walk(ctx, roots)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return evalFailed(fmt.Sprintf("reading the derivation closure: %v", err))
	}
	if err := discover(ctx, cfg, drvs); err != nil {
		return err
	}
	log.Info().Int("attrs", len(attrs)).Int("drvs", len(drvs)).Dur("took", time.Since(start)).Msg("evaluated")
	// A job too large for one message lists its attributes in parts first.
	parts := splitAttrs(attrs, int(cfg.Log.JetStream().Conn().MaxPayload()/2))
	for i, part := range parts[:len(parts)-1] {
		if err := emit(&eventsv1.Event{Id: fmt.Sprintf("attrs-%s-%d", jobsetID, i), Payload: &eventsv1.Event_JobsetAttrsListed{JobsetAttrsListed: &eventsv1.JobsetAttrsListed{
			ChangeId: js.GetChangeId(), Part: uint32(i), Attrs: part,
		}}}); err != nil {
			return err
		}
	}
	return emit(&eventsv1.Event{Id: "evaluated-" + jobsetID, Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{
		ChangeId: js.GetChangeId(), Attrs: parts[len(parts)-1], DrvCount: uint32(len(drvs)), DurationMs: time.Since(start).Milliseconds(),
		AttrParts: uint32(len(parts) - 1), AttrCount: uint32(len(attrs)),
	}}})
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
		ja := &eventsv1.JobAttr{Attr: a.Path, DrvPath: a.DrvPath, EvalError: a.Error}
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
		ev := &eventsv1.Event{Id: "discovered-" + d.ID, Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{
			DrvPath: d.Path, Name: d.Name, System: d.System, Outputs: d.Outputs, FixedOutput: d.FixedOutput,
			PreferLocalBuild: d.PreferLocalBuild, RequiredSystemFeatures: d.RequiredSystemFeatures,
			InputDrvs: inputs, OutputsValid: valid,
		}}}
		if _, err := cfg.Log.Append(ctx, d.ID, ev, eventlog.ExpectLast(0)); err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	return nil
}
