// Package request records change requests, the one way a change enters
// ekaci (the CLI, the webhook, an admin): it checks what a request must
// hold (full commit ids, never a revision name or a path) and appends it
// once per change, so a repeated request joins the change under way.
//
// A change whose checkout failed (a repository that was down, a commit
// not yet pushed) may be requested again: the new request starts a new
// attempt of the change, an aggregate of its own whose id is derived from
// the change's and the attempt's number. Every stage keys its facts,
// worktrees and roots by that id, so an attempt runs and concludes exactly
// like a first request, and nothing of the failed attempt is reopened.
package request

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/text"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// ErrBadRequest means a change request does not hold what it must.
var ErrBadRequest = errors.New("bad change request")

// MaxAttempts bounds how many times one change (repository, head, base)
// may be requested again after failed checkouts.
const MaxAttempts = 100

// IsCommit reports whether s is a full commit id: 40 (SHA-1) or 64
// (SHA-256) lowercase hex digits. Only these are ever used in a path or
// handed to git.
func IsCommit(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Check refuses a request without a repository or whose commits are not
// full commit ids; where says who checks (shown in the message).
func Check(req *eventsv1.ChangeRequested, where string) error {
	if req.GetRepoUrl() == "" {
		return fmt.Errorf("%w (%s): no repository", ErrBadRequest, where)
	}
	if !IsCommit(req.GetHeadCommit()) {
		return fmt.Errorf("%w (%s): head commit %s is not a full commit id (40 or 64 lowercase hex digits)", ErrBadRequest, where, quote(req.GetHeadCommit()))
	}
	if b := req.GetBaseCommit(); b != "" && !IsCommit(b) {
		return fmt.Errorf("%w (%s): base commit %s is not a full commit id (40 or 64 lowercase hex digits)", ErrBadRequest, where, quote(b))
	}
	return nil
}

// quote shows a rejected value safely: valid UTF-8, bounded, quoted.
func quote(s string) string { return strconv.Quote(text.Bound(s, 100)) }

// AttemptID is the change id of a change's attempt: attempt 0 is the
// change itself (eventlog.ChangeID), each later one a digest of it and the
// attempt's number, with the same shape.
func AttemptID(req *eventsv1.ChangeRequested, attempt int) string {
	id := eventlog.ChangeID(req.GetRepoUrl(), req.GetHeadCommit(), req.GetBaseCommit())
	if attempt == 0 {
		return id
	}
	h := sha256.New()
	for _, p := range []string{"change-attempt", id, strconv.Itoa(attempt)} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:len(id)]
}

// Recorded is where a request went.
type Recorded struct {
	ChangeID string // the attempt to follow
	Attempt  int
	Joined   bool // the attempt was already requested; nothing was appended
}

// Record appends req (after Check) as a new change, or joins the change
// already requested, or, when that change concluded after its checkout
// failed, as the change's next attempt. eventID is the request's event id
// (derived from its cause, e.g. eventlog.WebhookRequestedID); an attempt
// after the first gets eventlog.AttemptRequestedID, so that the stream's
// de-duplication never takes a new attempt for the repeat of an old one.
// Every append is guarded (ExpectLast(0) on the attempt), so two requests
// racing record one attempt and both follow it.
func Record(ctx context.Context, log *eventlog.Log, req *eventsv1.ChangeRequested, eventID, where string) (Recorded, error) {
	if err := Check(req, where); err != nil {
		return Recorded{}, err
	}
	for attempt, raced := 0, 0; attempt < MaxAttempts; {
		id := AttemptID(req, attempt)
		recs, _, err := log.Load(ctx, eventlog.Change, id)
		if err != nil {
			return Recorded{}, fmt.Errorf("read change %s: %w", id, err)
		}
		if len(recs) > 0 {
			if CheckoutFailed(recs) {
				attempt++
				continue
			}
			return Recorded{ChangeID: id, Attempt: attempt, Joined: true}, nil
		}
		ev := &eventsv1.Event{Id: eventlog.AttemptRequestedID(eventID, attempt), CorrelationId: id, Payload: &eventsv1.Event_ChangeRequested{ChangeRequested: req}}
		_, err = log.Append(ctx, id, ev, eventlog.ExpectLast(0))
		if errors.Is(err, eventlog.ErrConflict) && raced < 3 {
			raced++ // requested meanwhile by someone else: look at it again
			continue
		}
		if err != nil {
			return Recorded{}, fmt.Errorf("record change %s: %w", id, err)
		}
		return Recorded{ChangeID: id, Attempt: attempt}, nil
	}
	return Recorded{}, fmt.Errorf("%w (%s): the change was requested %d times and each checkout failed", ErrBadRequest, where, MaxAttempts)
}

// CheckoutFailed reports whether a change's history ends in a conclusion
// after a failed checkout: the one case a new request starts a new attempt.
func CheckoutFailed(recs []eventlog.Record) bool {
	failed, concluded := false, false
	for _, r := range recs {
		switch r.Event.GetPayload().(type) {
		case *eventsv1.Event_ChangeCheckoutFailed:
			failed = true
		case *eventsv1.Event_ChangeConcluded:
			concluded = true
		}
	}
	return failed && concluded
}
