package ekaci

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

func differenceName(d eventsv1.Difference) string {
	if d == eventsv1.Difference_DIFFERENCE_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(d.String(), "DIFFERENCE_"))
}

// PrintText writes the final table.
func PrintText(w io.Writer, o *Outcome) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tATTR\tSTATE\tDIFFERENCE\tDRV")
	for _, js := range o.Jobsets {
		for _, r := range js.GetResults() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", js.GetJob(), orDash(r.GetAttr()), r.GetState(), differenceName(r.GetDifference()), orDash(r.GetDrvPath()))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, js := range o.Jobsets {
		if n := js.GetResultsOmitted(); n > 0 {
			fmt.Fprintf(w, "\njob %s: %d more attributes not listed (all of them: %s)\n", js.GetJob(), n, countsText(js.GetCounts()))
		}
	}
	for _, js := range o.Jobsets {
		for _, r := range js.GetResults() {
			if r.GetCause() != "" {
				fmt.Fprintf(w, "\n%s.%s: a dependency failed: %s\n", js.GetJob(), r.GetAttr(), r.GetCause())
			}
			if r.GetError() != "" && r.GetState() != "succeeded" {
				fmt.Fprintf(w, "\n%s.%s (%s):\n%s\n", js.GetJob(), orDash(r.GetAttr()), r.GetState(), indent(r.GetError()))
			}
		}
	}
	if err := printChecks(w, o); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nconclusion: %s (%s)\n", conclusionName(o.Conclusion), o.Summary)
	return err
}

// printChecks writes the checks' table and the output tails of those
// that did not pass.
func printChecks(w io.Writer, o *Outcome) error {
	if len(o.Checks) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATE\tEXIT\tBASE\tLOG")
	for _, ev := range o.Checks {
		c := CheckOf(ev)
		state := c.State
		if c.Limit != "" {
			state += " (" + c.Limit + ")"
		}
		if c.Cached {
			state += ", cached"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", c.Name, state, c.ExitCode, orDash(c.Base), orDash(c.Log))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ev := range o.Checks {
		c := CheckOf(ev)
		if c.State == "succeeded" {
			continue
		}
		fmt.Fprintf(w, "\ncheck %s: %s", c.Name, c.Describe())
		if c.Detail != "" {
			fmt.Fprintf(w, ": %s", c.Detail)
		}
		fmt.Fprintln(w)
		if c.Tail != "" {
			fmt.Fprintln(w, indent(c.Tail))
		}
	}
	return nil
}

// countsText is "12 failed, 99988 succeeded", states in name order.
func countsText(counts map[string]uint32) string {
	states := make([]string, 0, len(counts))
	for s := range counts {
		states = append(states, s)
	}
	sort.Strings(states)
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = fmt.Sprintf("%d %s", counts[s], s)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

type jsonAttr struct {
	Attr       string `json:"attr"`
	Drv        string `json:"drv"`
	State      string `json:"state"`
	Difference string `json:"difference"`
	DurationMs int64  `json:"duration_ms"`
	LogTail    string `json:"log_tail,omitempty"`
	Cause      string `json:"cause,omitempty"`
}

type jsonJob struct {
	Job        string     `json:"job"`
	Conclusion string     `json:"conclusion"`
	Attrs      []jsonAttr `json:"attrs"`
	// Omitted attributes did not fit the conclusion; Counts covers all.
	Omitted uint32            `json:"omitted,omitempty"`
	Counts  map[string]uint32 `json:"counts,omitempty"`
}

type jsonOutcome struct {
	Change     string    `json:"change"`
	Conclusion string    `json:"conclusion"`
	Summary    string    `json:"summary"`
	Jobs       []jsonJob `json:"jobs"`
	Checks     []Check   `json:"checks,omitempty"`
}

// PrintJSON writes the outcome as one JSON document.
func PrintJSON(w io.Writer, o *Outcome) error {
	doc := jsonOutcome{Change: o.ChangeID, Conclusion: conclusionName(o.Conclusion), Summary: o.Summary, Jobs: []jsonJob{}}
	for _, js := range o.Jobsets {
		j := jsonJob{Job: js.GetJob(), Conclusion: conclusionName(js.GetConclusion()), Attrs: []jsonAttr{},
			Omitted: js.GetResultsOmitted(), Counts: js.GetCounts()}
		for _, r := range js.GetResults() {
			a := jsonAttr{Attr: r.GetAttr(), Drv: r.GetDrvPath(), State: r.GetState(), Difference: differenceName(r.GetDifference()), DurationMs: r.GetDurationMs(), Cause: r.GetCause()}
			if r.GetState() != "succeeded" {
				a.LogTail = r.GetError()
			}
			j.Attrs = append(j.Attrs, a)
		}
		doc.Jobs = append(doc.Jobs, j)
	}
	for _, ev := range o.Checks {
		doc.Checks = append(doc.Checks, CheckOf(ev))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
