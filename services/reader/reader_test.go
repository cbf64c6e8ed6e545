package reader

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
)

type env struct {
	ctx context.Context
	js  jetstream.JetStream
	log *eventlog.Log
	cfg Config
}

// setup gives a test an event log whose duplicate window is a second, so
// a test can replay a fact after it.
func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	js := eventlogtest.JetStreamWith(t, ctx, eventlog.StreamOptions{DuplicateWindow: time.Second})
	log := eventlog.New(js)
	return &env{ctx: ctx, js: js, log: log, cfg: Config{Events: log, Logger: zerolog.Nop(), Backoff: 50 * time.Millisecond, MaxDeliver: 2}}
}

func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("reader: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) append(t *testing.T, agg, id string, ev *eventsv1.Event) {
	t.Helper()
	_, last, err := e.log.Load(e.ctx, agg, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.log.Append(e.ctx, id, ev, eventlog.ExpectLast(last)); err != nil {
		t.Fatal(err)
	}
}

// checkedOut records a change requested and checked out at worktree.
func (e *env) checkedOut(t *testing.T, id, worktree string) {
	t.Helper()
	e.append(t, eventlog.Change, id, &eventsv1.Event{Id: "requested-" + id, Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{
		RepoUrl: "/src", HeadCommit: strings.Repeat("1", 40)}}})
	e.append(t, eventlog.Change, id, &eventsv1.Event{Id: "checked-out-" + id, Payload: &eventsv1.Event_ChangeCheckedOut{ChangeCheckedOut: &eventsv1.ChangeCheckedOut{
		HeadWorktree: worktree, HeadCommit: strings.Repeat("1", 40)}}})
}

func (e *env) facts(t *testing.T, agg, id string, kinds ...string) []*eventsv1.Event {
	t.Helper()
	recs, _, err := e.log.Load(e.ctx, agg, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []*eventsv1.Event
	for _, r := range recs {
		for _, k := range kinds {
			if r.Fact == k {
				out = append(out, r.Event)
			}
		}
	}
	return out
}

func (e *env) wait(t *testing.T, id string) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	natstest.Eventually(t, 30*time.Second, func() bool {
		evs := e.facts(t, eventlog.Change, id, "config_read", "config_invalid")
		if len(evs) > 0 {
			found = evs[0]
		}
		return found != nil
	}, "change "+id+" gets its configuration read or refused")
	return found
}

func (e *env) settled(t *testing.T) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() bool {
		c, err := e.js.Consumer(e.ctx, eventlog.EventsStream, "reader")
		if err != nil {
			return false
		}
		info, err := c.Info(e.ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the reader handled every delivery")
}

func worktree(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	if config == "" {
		return dir
	}
	if err := os.MkdirAll(filepath.Join(dir, ".ekaci"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{".ekaci/config.json": config, "a.nix": "{}"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCheckoutReplayedAfterTheWindow is finding 1 of the core review for
// the reader: the same checked_out handled again after the duplicate
// window used to append a second config_read and a second jobset.created
// (which resets a concluded jobset in the recorder).
func TestCheckoutReplayedAfterTheWindow(t *testing.T) {
	e := setup(t)
	tests := []struct {
		name, config, fact string
		jobs               []string
	}{
		{"configured", `{"jobs": {"a": {"file": "a.nix"}, "b": {"file": "a.nix"}}}`, "config_read", []string{"a", "b"}},
		{"not configured", "", "config_read", nil},
		{"refused", `{"jobs": {"a": {"file": "nope.nix"}}}`, "config_invalid", nil},
	}
	stop := e.start(t)
	ids := map[string]string{}
	for _, tt := range tests {
		ids[tt.name] = "change-" + strings.ReplaceAll(tt.name, " ", "-")
		e.checkedOut(t, ids[tt.name], worktree(t, tt.config))
	}
	for _, tt := range tests {
		e.wait(t, ids[tt.name])
	}
	e.settled(t)
	stop()
	time.Sleep(1500 * time.Millisecond) // past the 1 s duplicate window
	if err := e.js.DeleteConsumer(e.ctx, eventlog.EventsStream, "reader"); err != nil {
		t.Fatal(err)
	}
	stop = e.start(t)
	e.settled(t)
	stop()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := ids[tt.name]
			if n := len(e.facts(t, eventlog.Change, id, tt.fact)); n != 1 {
				t.Errorf("change has %d %s facts after a replay past the window, want 1", n, tt.fact)
			}
			if n := len(e.facts(t, eventlog.Change, id, "config_read", "config_invalid")); n != 1 {
				t.Errorf("change has %d configuration facts, want 1", n)
			}
			for _, job := range tt.jobs {
				if n := len(e.facts(t, eventlog.Jobset, eventlog.JobsetID(id, job), "created")); n != 1 {
					t.Errorf("jobset %s created %d times, want 1", job, n)
				}
			}
		})
	}
}

// TestRefusalWithInvalidUTF8Lands is finding 7 of the core review: the
// refusal quoted the config's bytes, protobuf refused the invalid UTF-8,
// and the change never concluded.
func TestRefusalWithInvalidUTF8Lands(t *testing.T) {
	e := setup(t)
	e.start(t)
	id := "c0ffee"
	e.checkedOut(t, id, worktree(t, "{\"jobs\": {\"a\": {\"file\": \"a.nix\", \"allow_eval_failures\": \"\xff\xfe\"}}}"))
	ev := e.wait(t, id)
	msg := ev.GetChangeConfigInvalid().GetError()
	if !utf8.ValidString(msg) || !strings.Contains(msg, "jobs.a.allow_eval_failures: want true or false") {
		t.Fatalf("got %v", ev)
	}
}

// TestUnreadableCheckoutIsRefused: a checkout the reader cannot read
// (its worktree gone) used to be dropped after the last retry, leaving
// the change unconcluded; now the give-up records it.
func TestUnreadableCheckoutIsRefused(t *testing.T) {
	e := setup(t)
	e.start(t)
	id := "c0ffee"
	e.checkedOut(t, id, filepath.Join(t.TempDir(), "gone"))
	ev := e.wait(t, id)
	if msg := ev.GetChangeConfigInvalid().GetError(); !strings.Contains(msg, "could not read .ekaci/config.json") || !strings.Contains(msg, "gone") {
		t.Fatalf("got %v", ev)
	}
	e.settled(t)
	if n := len(e.facts(t, eventlog.Change, id, "config_invalid")); n != 1 {
		t.Fatalf("%d config_invalid facts, want 1", n)
	}
}

// TestChecksQueued: each check of the head's configuration is queued once,
// with what the checker needs, before config_read names them; a check the
// base's configuration has too is marked for comparison with the base.
func TestChecksQueued(t *testing.T) {
	e := setup(t)
	e.start(t)
	head := worktree(t, `{"jobs": {"tools": {"file": "a.nix"}}, "checks": {
  "lint": {"command": "./lint.sh", "packages": {"job": "tools", "attrs": ["sc"]}},
  "test": {"command": "make test", "allow_network": true, "timeout_seconds": 42}}}`)
	base := worktree(t, `{"jobs": {"tools": {"file": "a.nix"}}, "checks": {"test": {"command": "old"}}}`)
	id := "c0ffee"
	e.append(t, eventlog.Change, id, &eventsv1.Event{Id: "requested-" + id, Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: &eventsv1.ChangeRequested{
		RepoUrl: "/src", HeadCommit: strings.Repeat("1", 40), BaseCommit: strings.Repeat("2", 40)}}})
	e.append(t, eventlog.Change, id, &eventsv1.Event{Id: "checked-out-" + id, Payload: &eventsv1.Event_ChangeCheckedOut{ChangeCheckedOut: &eventsv1.ChangeCheckedOut{
		HeadWorktree: head, BaseWorktree: base, HeadCommit: strings.Repeat("1", 40), BaseCommit: strings.Repeat("2", 40)}}})
	ev := e.wait(t, id)
	if got := ev.GetChangeConfigRead().GetChecks(); strings.Join(got, ",") != "lint,test" {
		t.Fatalf("config_read checks = %v, want [lint test]", got)
	}
	want := map[string]*eventsv1.CheckQueued{
		"lint": {ChangeId: id, Name: "lint", Command: "./lint.sh", TimeoutSeconds: 600, HeadWorktree: head, BaseWorktree: base,
			Packages: &eventsv1.CheckPackages{Job: "tools", Attrs: []string{"sc"}}, PackagesJobsetId: eventlog.JobsetID(id, "tools")},
		"test": {ChangeId: id, Name: "test", Command: "make test", AllowNetwork: true, TimeoutSeconds: 42, HeadWorktree: head, BaseWorktree: base, BaseHasCheck: true},
	}
	for name, w := range want {
		evs := e.facts(t, eventlog.Check, eventlog.CheckID(id, name), "queued")
		if len(evs) != 1 {
			t.Fatalf("check %s queued %d times, want 1", name, len(evs))
		}
		if got := evs[0].GetCheckQueued(); got.String() != w.String() {
			t.Errorf("check %s queued as\n%v\nwant\n%v", name, got, w)
		}
	}
}
