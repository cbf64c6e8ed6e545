package meshtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/services/ekaci"
)

// Summary is what two runs of the same pull request must agree on: the
// change's conclusion; per job, its conclusion, its counts and each
// attribute's final state and difference (derivation paths differ: every
// run has fresh commits); per check, how it ended (state, exit code,
// limit, the base's result, whether it fails the change). Logs, times and
// whether a result came from an earlier identical run are not compared.
type Summary struct {
	Conclusion string
	Jobs       map[string]JobSummary
	Checks     map[string]string // name -> "state exit=N limit=L base=B fails_change=F"
}

// JobSummary is one job of a Summary.
type JobSummary struct {
	Conclusion string
	Counts     map[string]uint32
	Attrs      map[string]string // attr -> "state/difference"
}

// ParseSummary reads `ekaci run --output json`'s document.
func ParseSummary(doc []byte) (Summary, error) {
	var o struct {
		Conclusion string `json:"conclusion"`
		Jobs       []struct {
			Job        string            `json:"job"`
			Conclusion string            `json:"conclusion"`
			Counts     map[string]uint32 `json:"counts"`
			Attrs      []struct {
				Attr       string `json:"attr"`
				State      string `json:"state"`
				Difference string `json:"difference"`
			} `json:"attrs"`
		} `json:"jobs"`
		Checks []struct {
			Name        string `json:"name"`
			State       string `json:"state"`
			ExitCode    int32  `json:"exit_code"`
			Limit       string `json:"limit"`
			Base        string `json:"base"`
			FailsChange bool   `json:"fails_change"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(doc, &o); err != nil {
		return Summary{}, fmt.Errorf("parse outcome: %w", err)
	}
	s := Summary{Conclusion: o.Conclusion, Jobs: map[string]JobSummary{}, Checks: map[string]string{}}
	for _, c := range o.Checks {
		s.Checks[c.Name] = fmt.Sprintf("%s exit=%d limit=%s base=%s fails_change=%t", c.State, c.ExitCode, c.Limit, c.Base, c.FailsChange)
	}
	for _, j := range o.Jobs {
		js := JobSummary{Conclusion: j.Conclusion, Counts: j.Counts, Attrs: map[string]string{}}
		for _, a := range j.Attrs {
			js.Attrs[a.Attr] = a.State + "/" + a.Difference
		}
		s.Jobs[j.Job] = js
	}
	return s, nil
}

// Summarize is the Summary of a concluded change, by way of the same JSON
// `ekaci run` prints.
func Summarize(o *ekaci.Outcome) (Summary, error) {
	var buf bytes.Buffer
	if err := ekaci.PrintJSON(&buf, o); err != nil {
		return Summary{}, err
	}
	return ParseSummary(buf.Bytes())
}

// Diff lists how got differs from want, one line each; none when equal.
func Diff(want, got Summary) []string {
	var d []string
	if want.Conclusion != got.Conclusion {
		d = append(d, fmt.Sprintf("conclusion %s, want %s", got.Conclusion, want.Conclusion))
	}
	for name, w := range want.Jobs {
		g, ok := got.Jobs[name]
		if !ok {
			d = append(d, fmt.Sprintf("job %s missing", name))
			continue
		}
		if w.Conclusion != g.Conclusion {
			d = append(d, fmt.Sprintf("job %s: conclusion %s, want %s", name, g.Conclusion, w.Conclusion))
		}
		if fmt.Sprint(w.Counts) != fmt.Sprint(g.Counts) {
			d = append(d, fmt.Sprintf("job %s: counts %v, want %v", name, g.Counts, w.Counts))
		}
		for a, ws := range w.Attrs {
			if gs := g.Attrs[a]; gs != ws {
				d = append(d, fmt.Sprintf("job %s: %s is %q, want %q", name, a, gs, ws))
			}
		}
		for a, gs := range g.Attrs {
			if _, ok := w.Attrs[a]; !ok {
				d = append(d, fmt.Sprintf("job %s: %s is %q, not in the reference", name, a, gs))
			}
		}
	}
	for name := range got.Jobs {
		if _, ok := want.Jobs[name]; !ok {
			d = append(d, fmt.Sprintf("job %s not in the reference", name))
		}
	}
	for name, w := range want.Checks {
		if g, ok := got.Checks[name]; !ok {
			d = append(d, fmt.Sprintf("check %s missing", name))
		} else if g != w {
			d = append(d, fmt.Sprintf("check %s: %s, want %s", name, g, w))
		}
	}
	for name, g := range got.Checks {
		if _, ok := want.Checks[name]; !ok {
			d = append(d, fmt.Sprintf("check %s (%s) not in the reference", name, g))
		}
	}
	sort.Strings(d)
	return d
}

// WaitConcluded follows the change until it concludes, starting over when
// following fails (a server of the cluster going away takes the reader's
// consumer with it): ekaci.Wait reads the change from its first fact.
func WaitConcluded(ctx context.Context, log *eventlog.Log, changeID string, progress io.Writer) (*ekaci.Outcome, error) {
	for {
		o, err := ekaci.Wait(ctx, log, changeID, progress)
		if err == nil {
			return o, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("change %s: %w (last: %v)", changeID, ctx.Err(), err)
		}
		fmt.Fprintf(progress, "following change %s again after: %v\n", changeID, strings.TrimSpace(err.Error()))
		time.Sleep(time.Second)
	}
}
