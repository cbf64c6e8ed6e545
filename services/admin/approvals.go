package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/ekaci/ekaci/libs/action"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// ListApprovals lists the approvals the model folded, by login (the
// bucket's key order: the lower-case login).
func (r *Reads) ListApprovals() (*adminv1.ListApprovalsResponse, error) {
	out := &adminv1.ListApprovalsResponse{}
	err := r.view(func(tx *bolt.Tx) error {
		return tx.Bucket(approvalsBucket).ForEach(func(k, v []byte) error {
			a := &adminv1.Approval{}
			if err := proto.Unmarshal(v, a); err != nil {
				return fmt.Errorf("decode %s/%s: %w", approvalsBucket, k, err)
			}
			out.Approvals = append(out.Approvals, a)
			return nil
		})
	})
	return out, err
}

// drained is a builder name's drain state as the model folded it.
type drained struct {
	drained bool
	actor   *eventsv1.Actor
}

// drains returns every builder name's drain state.
func (r *Reads) drains() (map[string]drained, error) {
	out := map[string]drained{}
	err := r.view(func(tx *bolt.Tx) error {
		return tx.Bucket(drainsBucket).ForEach(func(k, v []byte) error {
			var row drainRow
			if err := json.Unmarshal(v, &row); err != nil {
				return fmt.Errorf("decode %s/%s: %w", drainsBucket, k, err)
			}
			a := &eventsv1.Actor{}
			if err := proto.Unmarshal(row.Actor, a); err != nil {
				return fmt.Errorf("decode %s/%s: %w", drainsBucket, k, err)
			}
			out[row.Name] = drained{drained: row.Drained, actor: a}
			return nil
		})
	})
	return out, err
}

func (s *server) ListApprovals(ctx context.Context, req *adminv1.ListApprovalsRequest) (*adminv1.ListApprovalsResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.ListApprovals()
	if err != nil {
		return nil, statusOf(err, "")
	}
	withConfigured(out, s.approved)
	return out, nil
}

// withConfigured marks the approvals of configured logins, and adds those
// no fact names, keeping the list sorted by lower-case login.
func withConfigured(out *adminv1.ListApprovalsResponse, configured []string) {
	if len(configured) == 0 {
		return
	}
	byKey := map[string]*adminv1.Approval{}
	for _, a := range out.Approvals {
		byKey[strings.ToLower(a.GetLogin())] = a
	}
	for _, login := range configured {
		k := strings.ToLower(login)
		if a, ok := byKey[k]; ok {
			a.Configured = true
			continue
		}
		a := &adminv1.Approval{Login: login, Configured: true}
		byKey[k] = a
		out.Approvals = append(out.Approvals, a)
	}
	slices.SortFunc(out.Approvals, func(a, b *adminv1.Approval) int {
		return strings.Compare(strings.ToLower(a.GetLogin()), strings.ToLower(b.GetLogin()))
	})
}

// act runs an action of libs/action with NATS, as the caller, and
// answers with what it recorded; field names the request field an
// invalid or unknown argument is reported on.
func (s *server) act(ctx context.Context, reason, field string, do func(ctx context.Context, a *eventsv1.Actor) (action.Result, error)) (*adminv1.Action, error) {
	a := actor(ctx, reason)
	var res action.Result
	err := s.withNATS(ctx, func(ctx context.Context) (err error) {
		res, err = do(ctx, a)
		return err
	})
	if err != nil {
		return nil, statusOf(err, field)
	}
	return &adminv1.Action{Seq: res.Seq, Already: res.Already, Actor: a}, nil
}

func (s *server) ApproveContributor(ctx context.Context, req *adminv1.ApproveContributorRequest) (*adminv1.ApproveContributorResponse, error) {
	a, err := s.act(ctx, req.GetReason(), "login", func(ctx context.Context, a *eventsv1.Actor) (action.Result, error) {
		return action.Approve(ctx, s.log, req.GetLogin(), a)
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.ApproveContributorResponse{Action: a}, nil
}

func (s *server) RevokeContributor(ctx context.Context, req *adminv1.RevokeContributorRequest) (*adminv1.RevokeContributorResponse, error) {
	a, err := s.act(ctx, req.GetReason(), "login", func(ctx context.Context, a *eventsv1.Actor) (action.Result, error) {
		return action.Revoke(ctx, s.log, req.GetLogin(), a)
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.RevokeContributorResponse{Action: a}, nil
}
