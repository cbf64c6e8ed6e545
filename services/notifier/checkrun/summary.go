package checkrun

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp/checkname"
)

// MaxSummary is GitHub's limit on a check run's summary, in characters.
const MaxSummary = 65535

// Cause is what the notifier found about a root cause's failure: its own
// log tail and where its full log is.
type Cause struct {
	LogTail string
	LogRef  string // a URL or a server path of the full log
}

// Output is a check run's title and summary.
type Output struct {
	Title   string
	Summary string
}

// rootCause groups the failed attributes one failed derivation explains.
type rootCause struct {
	drv      string // the failed derivation's .drv path (or, for an eval error, "")
	attrs    []*eventsv1.AttrResult
	deciding int  // attributes that decide the verdict
	self     bool // the root is itself one of the attributes
}

// name is a derivation's name for people: the store path without its
// hash and .drv.
func name(drvPath string) string {
	base := drvPath[strings.LastIndex(drvPath, "/")+1:]
	if i := strings.IndexByte(base, '-'); i > 0 && i < len(base)-1 {
		base = base[i+1:]
	}
	return strings.TrimSuffix(base, ".drv")
}

// roots groups failed results by the derivation that caused them: a
// failed attribute is its own root, a transitive failure or a blocked
// one has its cause's. Largest groups first.
func roots(results []*eventsv1.AttrResult) (byCause []*rootCause, evalErrors []*eventsv1.AttrResult) {
	index := map[string]*rootCause{}
	for _, r := range results {
		if !failed(r) {
			continue
		}
		if r.GetState() == stateEvalError || r.GetDrvPath() == "" {
			evalErrors = append(evalErrors, r)
			continue
		}
		root := r.GetDrvPath()
		if c := r.GetCause(); c != "" && (r.GetState() == stateTransitive || r.GetState() == stateBlocked) {
			root = c
		}
		g := index[root]
		if g == nil {
			g = &rootCause{drv: root}
			index[root] = g
			byCause = append(byCause, g)
		}
		g.attrs = append(g.attrs, r)
		if decides(r) {
			g.deciding++
		}
		if root == r.GetDrvPath() {
			g.self = true
		}
	}
	sort.SliceStable(byCause, func(i, j int) bool {
		if byCause[i].deciding != byCause[j].deciding {
			return byCause[i].deciding > byCause[j].deciding
		}
		return len(byCause[i].attrs) > len(byCause[j].attrs)
	})
	return byCause, evalErrors
}

// Roots lists the root-cause derivations of a conclusion's failures, most
// telling first: the ones the notifier looks up a log tail for.
func Roots(c *eventsv1.JobsetConcluded) []string {
	g, _ := roots(c.GetResults())
	out := make([]string, 0, len(g))
	for _, r := range g {
		out = append(out, r.drv)
	}
	return out
}

// builder accumulates a summary within GitHub's limit, keeping room for
// the line that says what was left out.
type builder struct {
	b       strings.Builder
	limit   int
	omitted int // sections left out
}

func (s *builder) add(text string) bool {
	if s.omitted > 0 || utf8.RuneCountInString(s.b.String())+utf8.RuneCountInString(text) > s.limit {
		s.omitted++
		return false
	}
	s.b.WriteString(text)
	return true
}

// JobSummary renders a jobset's conclusion for its gate: counts, the
// failures grouped by root cause with their log tails, the failures the
// base branch has too (marked: they do not fail the gate), and the
// evaluation errors. It stays under MaxSummary characters and says what
// it left out.
func JobSummary(c *eventsv1.JobsetConcluded, causes map[string]Cause) Output {
	results := c.GetResults()
	var diff [5]int
	built, cached := 0, 0
	for _, r := range results {
		diff[r.GetDifference()]++
		if r.GetState() == stateSucceeded {
			if r.GetCached() {
				cached++
			} else {
				built++
			}
		}
	}
	counts := c.GetCounts()
	failures := 0
	for state, n := range counts {
		if state != stateSucceeded && state != stateRemoved {
			failures += int(n)
		}
	}
	groups, evalErrors := roots(results)
	deciding, base, notOurs := 0, 0, 0
	for _, g := range groups {
		deciding += g.deciding
		base += len(g.attrs) - g.deciding
		for _, r := range g.attrs {
			if decides(r) && notTheirFault(r) {
				notOurs++
			}
		}
	}
	for _, r := range evalErrors {
		if decides(r) {
			deciding++
		}
	}

	out := Output{}
	switch c.GetConclusion() {
	case eventsv1.Conclusion_CONCLUSION_SUCCESS:
		n := diff[eventsv1.Difference_DIFFERENCE_NEW] + diff[eventsv1.Difference_DIFFERENCE_CHANGED] + diff[eventsv1.Difference_DIFFERENCE_UNSPECIFIED]
		out.Title = fmt.Sprintf("Succeeded: %d new or changed %s", n, plural(n, "attribute", "attributes"))
		if n == 0 {
			out.Title = "Succeeded: nothing new or changed to build"
		}
		if base > 0 {
			out.Title += fmt.Sprintf(" (%d failures already on the base branch)", base)
		}
	case eventsv1.Conclusion_CONCLUSION_CANCELLED:
		out.Title = "Cancelled"
	case eventsv1.Conclusion_CONCLUSION_NEUTRAL:
		out.Title = "Nothing to decide"
	default:
		n := countDeciding(groups) + countDeciding2(evalErrors)
		out.Title = fmt.Sprintf("%d new or changed %s failed (%d root %s)", deciding, plural(deciding, "attribute", "attributes"), n, plural(n, "cause", "causes"))
		if notOurs > 0 && notOurs == deciding {
			out.Title = fmt.Sprintf("Not caused by this pull request: ekaci's infrastructure failed %d %s; re-run", notOurs, plural(notOurs, "build", "builds"))
		}
	}

	s := &builder{limit: MaxSummary - 200}
	s.add(fmt.Sprintf("**%d attributes**: %d new, %d changed, %d removed, %d unchanged",
		len(results)+int(c.GetResultsOmitted()), diff[eventsv1.Difference_DIFFERENCE_NEW], diff[eventsv1.Difference_DIFFERENCE_CHANGED],
		diff[eventsv1.Difference_DIFFERENCE_REMOVED], diff[eventsv1.Difference_DIFFERENCE_UNCHANGED]))
	if n := diff[eventsv1.Difference_DIFFERENCE_UNSPECIFIED]; n > 0 {
		s.add(fmt.Sprintf(", %d without a base to compare with", n))
	}
	s.add(fmt.Sprintf(" · **%d built**, %d cached, %d failed", built, cached, failures))
	if c.GetResultsOmitted() > 0 {
		s.add(fmt.Sprintf(" (%d attributes were too many to list in the conclusion; counts cover them all)", c.GetResultsOmitted()))
	}
	s.add("\n")
	if c.GetConclusion() == eventsv1.Conclusion_CONCLUSION_SUCCESS && len(groups) == 0 && len(evalErrors) == 0 {
		if len(results) == 0 {
			s.add("\nThe job has no attributes to build.\n")
		} else {
			s.add("\nEverything new or changed built.\n")
		}
	}
	var ours, theirs []*rootCause
	for _, g := range groups {
		if g.deciding > 0 {
			ours = append(ours, g)
		} else {
			theirs = append(theirs, g)
		}
	}
	if len(ours) > 0 {
		s.add("\n### Failures by root cause\n")
		for _, g := range ours {
			s.add(causeLines(g, causes[g.drv], false))
		}
	}
	if len(theirs) > 0 {
		s.add("\n### Already failing on the base branch\nThese attributes are unchanged by this pull request and fail on its base too: they do not fail this check.\n")
		for _, g := range theirs {
			s.add(causeLines(g, causes[g.drv], true))
		}
	}
	if len(evalErrors) > 0 {
		s.add("\n### Evaluation errors\n")
		for _, r := range evalErrors {
			mark := ""
			if !decides(r) {
				mark = " (already on the base branch)"
			}
			s.add(fmt.Sprintf("- `%s`%s\n%s", r.GetAttr(), mark, fence(r.GetError(), 2000)))
		}
	}
	out.Summary = s.b.String()
	if s.omitted > 0 {
		out.Summary += fmt.Sprintf("\n\n… %d more root causes and errors left out: GitHub allows %d characters in a summary.\n", s.omitted, MaxSummary)
	}
	return out
}

func countDeciding(groups []*rootCause) int {
	n := 0
	for _, g := range groups {
		if g.deciding > 0 {
			n++
		}
	}
	return n
}

func countDeciding2(evalErrors []*eventsv1.AttrResult) int {
	n := 0
	for _, r := range evalErrors {
		if decides(r) {
			n++
		}
	}
	return n
}

// causeLines is one root cause: one line, however many attributes it
// broke, then its log tail, derivation and full log.
func causeLines(g *rootCause, c Cause, onBase bool) string {
	var b strings.Builder
	n := len(g.attrs)
	what := "failed"
	for _, r := range g.attrs {
		if r.GetState() == stateBlocked {
			what = "was interrupted"
		}
	}
	var deps []*eventsv1.AttrResult
	var self *eventsv1.AttrResult
	for _, r := range g.attrs {
		if r.GetDrvPath() == g.drv {
			self = r
		} else {
			deps = append(deps, r)
		}
	}
	switch {
	case self != nil && len(deps) == 0:
		fmt.Fprintf(&b, "- `%s` %s%s\n", self.GetAttr(), verb(self), interruption(self))
	case self != nil:
		fmt.Fprintf(&b, "- `%s` %s%s, and %d %s that %s on it", self.GetAttr(), verb(self), interruption(self), len(deps),
			plural(len(deps), "attribute", "attributes"), plural(len(deps), "depends", "depend"))
	default:
		fmt.Fprintf(&b, "- `%s` %s: %d %s %s on it", name(g.drv), what, len(deps), plural(len(deps), "attribute", "attributes"),
			plural(len(deps), "depends", "depend"))
	}
	if len(deps) > 0 {
		if !onBase && g.deciding < n {
			fmt.Fprintf(&b, " (%d new or changed)", g.deciding)
		}
		b.WriteString(": " + attrList(deps, 10) + "\n")
	}
	if c.LogTail != "" {
		b.WriteString(fence(c.LogTail, 3000))
	} else if self != nil && self.GetError() != "" {
		b.WriteString(fence(self.GetError(), 3000))
	}
	fmt.Fprintf(&b, "  derivation `%s`", g.drv)
	if c.LogRef != "" {
		fmt.Fprintf(&b, " · full log: %s", c.LogRef)
	}
	b.WriteString("\n")
	return b.String()
}

func verb(r *eventsv1.AttrResult) string {
	switch r.GetState() {
	case stateTransitive:
		return "failed: its dependency `" + name(r.GetCause()) + "` failed"
	case stateInterrupt:
		return "was interrupted"
	case stateBlocked:
		return "is blocked by an interrupted dependency"
	}
	return "failed"
}

func interruption(r *eventsv1.AttrResult) string {
	if r.GetState() != stateInterrupt {
		return ""
	}
	switch r.GetInterruption() {
	case eventsv1.InterruptKind_INTERRUPT_KIND_TIMEOUT:
		return " (timed out)"
	case eventsv1.InterruptKind_INTERRUPT_KIND_INFRASTRUCTURE:
		return " (ekaci's infrastructure failed: not caused by this pull request; re-run)"
	case eventsv1.InterruptKind_INTERRUPT_KIND_OUT_OF_MEMORY:
		return " (out of memory)"
	case eventsv1.InterruptKind_INTERRUPT_KIND_UNSATISFIABLE:
		return " (no builder can build it)"
	case eventsv1.InterruptKind_INTERRUPT_KIND_PROCESS_DEATH:
		return " (its builder died)"
	case eventsv1.InterruptKind_INTERRUPT_KIND_CANCELLED:
		return " (cancelled)"
	}
	return ""
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// attrList names up to max attributes and counts the rest.
func attrList(rs []*eventsv1.AttrResult, max int) string {
	var names []string
	for i, r := range rs {
		if i == max {
			names = append(names, fmt.Sprintf("and %d more", len(rs)-max))
			break
		}
		names = append(names, "`"+r.GetAttr()+"`")
	}
	return strings.Join(names, ", ")
}

// fence quotes text (its last max bytes) as a code block.
func fence(text string, max int) string {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return ""
	}
	if len(text) > max {
		cut := len(text) - max
		for cut < len(text) && !utf8.RuneStart(text[cut]) {
			cut++
		}
		text = "…" + text[cut:]
	}
	text = strings.ReplaceAll(text, "```", "`\u200b``")
	return "  ```\n" + indent(text) + "\n  ```\n"
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// AttrOutput is the run of one failed new or changed attribute.
func AttrOutput(r *eventsv1.AttrResult, job string, c Cause) Output {
	out := Output{Title: fmt.Sprintf("%s %s%s", r.GetAttr(), verb(r), interruption(r))}
	var b strings.Builder
	if r.GetState() == stateTransitive || r.GetState() == stateBlocked {
		fmt.Fprintf(&b, "It was not built: its dependency `%s` did not build. The `%s` check lists every attribute that failure broke.\n", name(r.GetCause()), checkname.Job(job))
	}
	if c.LogTail != "" {
		b.WriteString(fence(c.LogTail, 8000))
	} else if r.GetError() != "" {
		b.WriteString(fence(r.GetError(), 8000))
	}
	if r.GetDrvPath() != "" {
		fmt.Fprintf(&b, "derivation `%s`", r.GetDrvPath())
	}
	if c.LogRef != "" {
		fmt.Fprintf(&b, " · full log: %s", c.LogRef)
	}
	out.Summary = b.String()
	return out
}
