package ekaci

import (
	"fmt"
	"strings"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Check is how a check ended, as `ekaci run` shows it.
type Check struct {
	Name string `json:"name"`
	// State is succeeded, failed or interrupted.
	State string `json:"state"`
	// ExitCode of the command; -1 when a limit stopped it.
	ExitCode int32 `json:"exit_code"`
	// Limit is the interruption (timeout, memory, processes, output,
	// files, packages, infrastructure); empty for none.
	Limit  string `json:"limit,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Base is how the base revision did when it was compared: passed or
	// failed; empty when it was not run.
	Base       string `json:"base,omitempty"`
	Cached     bool   `json:"cached"`
	DurationMs int64  `json:"duration_ms"`
	// Log is the log file under the data dir's logs.
	Log  string `json:"log,omitempty"`
	Tail string `json:"output_tail,omitempty"`
	// Decides is true when it fails the change (it did not pass, and the
	// base did).
	Decides bool `json:"fails_change"`
}

// CheckOf reads a check's ending fact.
func CheckOf(ev *eventsv1.Event) Check {
	var c Check
	var head, base *eventsv1.CheckRun
	baseFailed := false
	switch p := ev.GetPayload().(type) {
	case *eventsv1.Event_CheckSucceeded:
		c = Check{Name: p.CheckSucceeded.GetName(), State: "succeeded"}
		head = p.CheckSucceeded.GetHead()
	case *eventsv1.Event_CheckFailed:
		c = Check{Name: p.CheckFailed.GetName(), State: "failed", Tail: p.CheckFailed.GetOutputTail()}
		head, base, baseFailed = p.CheckFailed.GetHead(), p.CheckFailed.GetBase(), p.CheckFailed.GetBaseFailed()
	case *eventsv1.Event_CheckInterrupted:
		c = Check{Name: p.CheckInterrupted.GetName(), State: "interrupted", Tail: p.CheckInterrupted.GetOutputTail(),
			Limit: kindName(p.CheckInterrupted.GetKind()), Detail: p.CheckInterrupted.GetDetail()}
		head, base, baseFailed = p.CheckInterrupted.GetHead(), p.CheckInterrupted.GetBase(), p.CheckInterrupted.GetBaseFailed()
	}
	c.ExitCode, c.Cached, c.DurationMs, c.Log = head.GetExitCode(), head.GetCached(), head.GetDurationMs(), head.GetLog()
	if head == nil {
		c.ExitCode = -1
	}
	if base != nil {
		c.Base = "passed"
		if baseFailed {
			c.Base = "failed"
		}
	}
	c.Decides = c.State != "succeeded" && !baseFailed
	return c
}

func kindName(k eventsv1.CheckInterruptKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "CHECK_INTERRUPT_KIND_"))
}

// Describe is one line: "failed (exit 1; the base failed it too)".
func (c Check) Describe() string {
	var parts []string
	switch {
	case c.Limit != "":
		parts = append(parts, c.Limit+" limit")
		if c.Limit == "packages" || c.Limit == "infrastructure" {
			parts[0] = c.Limit
		}
	case c.State != "succeeded":
		parts = append(parts, fmt.Sprintf("exit %d", c.ExitCode))
	}
	switch c.Base {
	case "failed":
		parts = append(parts, "the base failed it too")
	case "passed":
		parts = append(parts, "the base passed it")
	}
	if c.Cached {
		parts = append(parts, "unchanged: earlier result")
	}
	if len(parts) == 0 {
		return c.State
	}
	return c.State + " (" + strings.Join(parts, "; ") + ")"
}
