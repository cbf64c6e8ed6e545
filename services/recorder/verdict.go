package recorder

import (
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// maybeConclude concludes a jobset whose attributes are all settled. Only
// new or changed attributes (or all, without a base) decide the verdict.
func (c *Conclusions) maybeConclude(tx *bolt.Tx, jobsetID string, js *jobsetRow, rec eventlog.Record, out *projection.Decisions) error {
	if js.Decided || !js.Evaluated || (js.Unsettled > 0 && !js.Cancelled) {
		return nil
	}
	conclusion := eventsv1.Conclusion_CONCLUSION_SUCCESS
	var results []*eventsv1.AttrResult
	err := eachAttr(tx, jobsetID, func(a *eventsv1.JobAttr) error {
		r := &eventsv1.AttrResult{Attr: a.GetAttr(), DrvPath: a.GetDrvPath(), Difference: a.GetDifference(), Error: a.GetEvalError(), State: ResultEvalError}
		if a.GetDifference() == eventsv1.Difference_DIFFERENCE_REMOVED {
			// Only in the base: nothing to build.
			r.State = ResultRemoved
		}
		if a.GetDrvId() != "" {
			row, ok, err := c.drvs.lookup(tx, a.GetDrvId(), true)
			if err != nil {
				return err
			}
			if ok {
				r.State, r.Cause, r.Error, r.DurationMs = row.Drv.State.String(), row.Cause, row.Detail, row.Millis
				if row.Drv.State == buildstate.Interrupted {
					r.Interruption = row.Drv.Interruption // a timeout or ekaci's own failure: the notifier says which
				}
				r.Cached = row.Drv.State == buildstate.Succeeded &&
					(row.Drv.Cached || row.SettledAt > 0 && row.SettledAt < js.EvaluatedAt)
				decides := a.GetDifference() != eventsv1.Difference_DIFFERENCE_UNCHANGED
				if decides && row.Drv.State.IsFailure() {
					conclusion = eventsv1.Conclusion_CONCLUSION_FAILURE
				}
			}
		}
		results = append(results, r)
		return nil
	})
	if err != nil {
		return err
	}
	if js.Cancelled {
		// Whatever failed or is still on its way: someone stopped it.
		conclusion = eventsv1.Conclusion_CONCLUSION_CANCELLED
	}
	results, omitted, counts := c.fit(results)
	js.Conclusion = conclusion
	if err := c.unwatch(tx, jobsetID); err != nil {
		return err
	}
	return c.decideJobset(tx, jobsetID, js, rec, out, conclusion, results, omitted, counts)
}

// Result states of a conclusion's attributes besides the build states.
// A settled derivation's result state is its buildstate.State's name
// (State.String, e.g. "succeeded"), read back with buildstate.ParseState.
const (
	// ResultEvalError: the attribute did not evaluate, or (the only result
	// of a jobset that did not evaluate at all) the jobset did not.
	ResultEvalError = "eval-error"
	// ResultRemoved: the attribute is only in the base; nothing to build.
	ResultRemoved = "removed"
)

// DefaultResultBudget bounds the results one jobset_concluded lists, in
// bytes of JSON: half of NATS's default 1 MiB message.
const DefaultResultBudget = 512 << 10

// resultRank orders what a conclusion lists first when not all fits: the
// failures that decide the verdict, then other failures and evaluation
// errors, then the rest.
func resultRank(r *eventsv1.AttrResult) int {
	failed := resultFailed(r.GetState())
	decides := r.GetDifference() != eventsv1.Difference_DIFFERENCE_UNCHANGED
	switch {
	case failed && decides:
		return 0
	case failed:
		return 1
	}
	return 2
}

// resultFailed reports whether a result state counts against the jobset:
// anything but a success or a removal (a failed, blocked or interrupted
// build, an evaluation error).
func resultFailed(state string) bool {
	if s, err := buildstate.ParseState(state); err == nil {
		return s != buildstate.Succeeded
	}
	return state != ResultRemoved
}

// fit keeps the results that fit the budget — the most telling first —
// sorted by attribute, and counts every result by state.
func (c *Conclusions) fit(results []*eventsv1.AttrResult) ([]*eventsv1.AttrResult, uint32, map[string]uint32) {
	counts := map[string]uint32{}
	for _, r := range results {
		counts[r.GetState()]++
	}
	budget := c.resultBudget
	if budget <= 0 {
		budget = DefaultResultBudget
	}
	// Ranked once, not at every comparison.
	ranked := make([]rankedResult, len(results))
	for i, r := range results {
		ranked[i] = rankedResult{r, resultRank(r)}
	}
	sort.SliceStable(ranked, func(i, j int) bool {
		if a, b := ranked[i].rank, ranked[j].rank; a != b {
			return a < b
		}
		return ranked[i].r.GetAttr() < ranked[j].r.GetAttr()
	})
	for i := range ranked {
		results[i] = ranked[i].r
	}
	used, kept := 0, 0
	for _, r := range results {
		size := eventlog.JSONSize(r) + 1 // and a comma
		if used+size > budget {
			break
		}
		used += size
		kept++
	}
	omitted := uint32(len(results) - kept)
	results = results[:kept]
	sort.Slice(results, func(i, j int) bool { return results[i].GetAttr() < results[j].GetAttr() })
	if omitted > 0 {
		c.logger.Warn().Int("listed", kept).Uint32("omitted", omitted).Msg("jobset too large for one message: its conclusion lists the failures first")
	}
	return results, omitted, counts
}

type rankedResult struct {
	r    *eventsv1.AttrResult
	rank int
}
