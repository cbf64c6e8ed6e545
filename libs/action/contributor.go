package action

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Contributor is what a GitHub login's approval facts say: the one fold
// of them, used by the deciders here, the webhook's approval decision and
// the admin read model.
type Contributor struct {
	// Login is the login as last given.
	Login string
	// Approved is set by contributor_approved, cleared by
	// contributor_revoked.
	Approved bool
	// Actor, At and Seq are the last approval's or revocation's.
	Actor *eventsv1.Actor
	At    time.Time
	Seq   uint64
	// Facts counts the aggregate's facts.
	Facts int
}

// Apply folds one of the contributor's facts.
func (c *Contributor) Apply(rec eventlog.Record) {
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ContributorApproved:
		c.Login, c.Approved, c.Actor = p.ContributorApproved.GetLogin(), true, p.ContributorApproved.GetActor()
	case *eventsv1.Event_ContributorRevoked:
		c.Login, c.Approved, c.Actor = p.ContributorRevoked.GetLogin(), false, p.ContributorRevoked.GetActor()
	default:
		return
	}
	c.At, c.Seq = rec.Time, rec.Seq
	c.Facts++
}

// LoadContributor folds a login's approval facts from the log.
func LoadContributor(ctx context.Context, log Log, login string) (Contributor, uint64, error) {
	recs, last, err := log.Load(ctx, eventlog.Contributor, eventlog.ContributorID(login))
	if err != nil {
		return Contributor{}, 0, fmt.Errorf("approval of %s: %w", login, err)
	}
	var c Contributor
	for _, r := range recs {
		c.Apply(r)
	}
	c.Facts = len(recs)
	return c, last, nil
}

// checkLogin refuses what cannot be a GitHub login: 1 to 39 letters,
// digits and hyphens.
func checkLogin(login string) error {
	ok := len(login) >= 1 && len(login) <= 39
	for i := 0; ok && i < len(login); i++ {
		c := login[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: login %q: want a GitHub login (1 to 39 letters, digits and hyphens)", ErrInvalid, login)
	}
	return nil
}

// Approve records that login's pull requests run without a maintainer's
// approval (contributor_approved). An approved login answers Already.
func Approve(ctx context.Context, log Log, login string, actor *eventsv1.Actor) (Result, error) {
	return decideContributor(ctx, log, login, actor, true)
}

// Revoke takes back an approval Approve recorded (contributor_revoked):
// ErrNotFound when none was ever recorded, Already when it is revoked.
func Revoke(ctx context.Context, log Log, login string, actor *eventsv1.Actor) (Result, error) {
	return decideContributor(ctx, log, login, actor, false)
}

func decideContributor(ctx context.Context, log Log, login string, actor *eventsv1.Actor, approve bool) (Result, error) {
	verb := "approve"
	if !approve {
		verb = "revoke"
	}
	if err := checkLogin(login); err != nil {
		return Result{}, err
	}
	if err := checkActor(actor); err != nil {
		return Result{}, err
	}
	id := eventlog.ContributorID(login)
	for range attempts {
		c, last, err := LoadContributor(ctx, log, login)
		if err != nil {
			return Result{}, fmt.Errorf("%s %s: %w", verb, login, err)
		}
		switch {
		case !approve && c.Facts == 0:
			return Result{}, fmt.Errorf("revoke %s: no approval of it was recorded: %w", login, ErrNotFound)
		case c.Facts > 0 && c.Approved == approve:
			return Result{Seq: c.Seq, Already: true}, nil
		}
		ev := &eventsv1.Event{Id: eventlog.ContributorApprovedID(id, c.Facts+1),
			Payload: &eventsv1.Event_ContributorApproved{ContributorApproved: &eventsv1.ContributorApproved{Login: login, Actor: actor}}}
		if !approve {
			ev = &eventsv1.Event{Id: eventlog.ContributorRevokedID(id, c.Facts+1),
				Payload: &eventsv1.Event_ContributorRevoked{ContributorRevoked: &eventsv1.ContributorRevoked{Login: login, Actor: actor}}}
		}
		a, err := log.Append(ctx, id, ev, eventlog.ExpectLast(last))
		switch {
		case errors.Is(err, eventlog.ErrConflict):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("%s %s: %w", verb, login, err)
		}
		return Result{Seq: a.Seq, Already: a.Duplicate}, nil
	}
	return Result{}, fmt.Errorf("%s %s: it changed under each of %d attempts", verb, login, attempts)
}
