package request

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

func TestIsCommit(t *testing.T) {
	tests := []struct {
		name, s string
		want    bool
	}{
		{"sha1", strings.Repeat("0123456789", 4), true},
		{"sha256", strings.Repeat("abcdef01", 8), true},
		{"short", "0123456", false},
		{"41 digits", strings.Repeat("a", 41), false},
		{"uppercase", strings.Repeat("A", 40), false},
		{"branch", "main", false},
		{"traversal", "../../../../../../../../../../../../../victim", false},
		{"empty", "", false},
		{"non-hex of the right length", strings.Repeat("g", 40), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsCommit(tt.s); got != tt.want {
				t.Fatalf("IsCommit(%q) = %v", tt.s, got)
			}
		})
	}
}

func TestCheckSaysWhatAndWhere(t *testing.T) {
	head := strings.Repeat("1", 40)
	tests := []struct {
		name string
		req  *eventsv1.ChangeRequested
		want string // "" for accepted
	}{
		{"good", &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: head}, ""},
		{"good with base", &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: head, BaseCommit: head}, ""},
		{"no repository", &eventsv1.ChangeRequested{HeadCommit: head}, "(here): no repository"},
		{"bad head", &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: "HEAD"}, `(here): head commit "HEAD" is not a full commit id`},
		{"bad base", &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: head, BaseCommit: "../x"}, `(here): base commit "../x" is not a full commit id`},
		{"long head shown short", &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: strings.Repeat("x", 10000)}, "is not a full commit id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.req, "here")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tt.want) || len(err.Error()) > 300 {
				t.Fatalf("err = %v, want ErrBadRequest saying %q (short)", err, tt.want)
			}
		})
	}
}

func TestAttemptID(t *testing.T) {
	req := &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: strings.Repeat("1", 40)}
	seen := map[string]bool{}
	for n := range 5 {
		id := AttemptID(req, n)
		if !eventlog.ValidToken(id) || len(id) != len(eventlog.ChangeID("/r", req.GetHeadCommit(), "")) || seen[id] {
			t.Fatalf("attempt %d: id %q is not a fresh token of a change id's shape", n, id)
		}
		seen[id] = true
		if AttemptID(req, n) != id {
			t.Fatalf("attempt %d: id is not deterministic", n)
		}
	}
	if AttemptID(req, 0) != eventlog.ChangeID("/r", req.GetHeadCommit(), "") {
		t.Fatal("attempt 0 is not the change itself")
	}
}

func TestRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	req := &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: strings.Repeat("1", 40)}
	add := func(id string, evs ...*eventsv1.Event) {
		t.Helper()
		for _, ev := range evs {
			if _, err := log.Append(ctx, id, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	failed := &eventsv1.Event{Id: "f", Payload: &eventsv1.Event_ChangeCheckoutFailed{ChangeCheckoutFailed: &eventsv1.ChangeCheckoutFailed{Error: "x"}}}
	concluded := &eventsv1.Event{Id: "c", Payload: &eventsv1.Event_ChangeConcluded{ChangeConcluded: &eventsv1.ChangeConcluded{}}}

	got, err := Record(ctx, log, req, "requested", "test")
	if err != nil || got != (Recorded{ChangeID: AttemptID(req, 0)}) {
		t.Fatalf("first: %+v, %v", got, err)
	}
	if got, err := Record(ctx, log, req, "requested", "test"); err != nil || !got.Joined || got.Attempt != 0 {
		t.Fatalf("again while under way: %+v, %v", got, err)
	}
	// Failed but not concluded yet: still joined (the conclusion follows).
	failed.Id = "f0"
	add(AttemptID(req, 0), failed)
	if got, err := Record(ctx, log, req, "requested", "test"); err != nil || !got.Joined || got.Attempt != 0 {
		t.Fatalf("failed, not concluded: %+v, %v", got, err)
	}
	concluded.Id = "c0"
	add(AttemptID(req, 0), concluded)

	// Requested again by many at once: one next attempt, all follow it.
	var wg sync.WaitGroup
	results := make(chan Recorded, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := Record(ctx, log, req, "requested", "test")
			if err != nil {
				t.Error(err)
			}
			results <- got
		}()
	}
	wg.Wait()
	close(results)
	appended := 0
	for r := range results {
		if r.ChangeID != AttemptID(req, 1) || r.Attempt != 1 {
			t.Fatalf("a racing request went to %+v", r)
		}
		if !r.Joined {
			appended++
		}
	}
	recs, _, err := log.Load(ctx, eventlog.Change, AttemptID(req, 1))
	if err != nil {
		t.Fatal(err)
	}
	if appended != 1 || len(recs) != 1 || recs[0].Event.GetId() != "requested-attempt-1" {
		t.Fatalf("%d racing requests appended, attempt 1 holds %d facts (%v)", appended, len(recs), recs)
	}
	// A concluded attempt that did not fail at checkout is joined.
	concluded.Id = "c1"
	add(AttemptID(req, 1), concluded)
	if got, err := Record(ctx, log, req, "requested", "test"); err != nil || !got.Joined || got.Attempt != 1 {
		t.Fatalf("after a conclusion that was no checkout failure: %+v, %v", got, err)
	}
	if _, err := Record(ctx, log, &eventsv1.ChangeRequested{RepoUrl: "/r", HeadCommit: "main"}, "requested", "test"); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad request recorded: %v", err)
	}
}
