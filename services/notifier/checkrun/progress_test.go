package checkrun_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/githubapp"
	"github.com/ekaci/ekaci/services/notifier/checkrun"
)

// TestProgressWhileBuilding runs the publisher on a real event log: while
// the job builds, its gate shows how its attributes stand; once it
// concludes, progress never reopens it.
func TestProgressWhileBuilding(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() {
		done <- checkrun.Run(ctx, checkrun.Config{Events: f.log, Logger: zerolog.Nop(), App: f.app, DataDir: f.dir,
			ProgressEvery: 100 * time.Millisecond, Retry: githubapp.Retry{Backoff: 10 * time.Millisecond}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	ids := []string{strings.Repeat("a", 32), strings.Repeat("b", 32), strings.Repeat("c", 32)}
	var attrs []*eventsv1.JobAttr
	for i, id := range ids {
		attrs = append(attrs, &eventsv1.JobAttr{Attr: string(rune('x' + i)), DrvId: id, DrvPath: "/nix/store/" + id + "-x.drv", Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	h := history()
	appendFact := func(agg string, ev *eventsv1.Event, id string) {
		t.Helper()
		ev.Id = id
		if _, err := f.log.Append(f.ctx, agg, ev); err != nil {
			t.Fatal(err)
		}
	}
	appendFact(changeID, h[0].Event, "req")
	appendFact(changeID, h[1].Event, "cfg")
	appendFact(jobsetID, h[2].Event, "created")
	appendFact(jobsetID, &eventsv1.Event{Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: changeID, Attrs: attrs, DrvCount: 3}}}, "evaluated")
	appendFact(ids[0], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}}, "s0")
	appendFact(ids[0], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: 1}}}, "ok0")
	appendFact(ids[1], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}}, "s1")
	appendFact(ids[1], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildFailed{DrvBuildFailed: &eventsv1.DrvBuildFailed{Attempt: 1}}}, "f1")
	appendFact(ids[2], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}}, "s2")

	gate := func() (string, string, string) {
		for _, r := range f.gh.CheckRuns() {
			if r.Name == "ekaci: packages" {
				return r.Status, r.Title, r.Summary
			}
		}
		return "", "", ""
	}
	want := "**1 built**, 1 running, 0 queued, 1 failed, of 3"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if status, _, summary := gate(); status == "in_progress" && strings.Contains(summary, want) {
			break
		}
		if time.Now().After(deadline) {
			_, title, summary := gate()
			t.Fatalf("gate progress %q / %q, want %q", title, summary, want)
		}
	}
	appendFact(jobsetID, h[4].Event, "concluded")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if status, _, _ := gate(); status == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gate not completed")
		}
	}
	calls := len(f.gh.Calls())
	appendFact(ids[2], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: 1}}}, "ok2")
	time.Sleep(time.Second) // ten progress periods: a wrong reopening has time to show
	if status, _, _ := gate(); status != "completed" {
		t.Fatalf("progress after the conclusion reopened the gate: %s", status)
	}
	for _, c := range f.gh.Calls()[calls:] {
		if c.Body["status"] == "in_progress" {
			t.Fatalf("progress sent after the conclusion: %v", c.Body)
		}
	}
}
