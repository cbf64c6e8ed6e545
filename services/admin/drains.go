package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/action"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// DrainBuilder drains a builder name that a live process heartbeats
// under, or one drained or resumed before (NotFound otherwise: most
// likely a typo, which would drain nothing).
func (s *server) DrainBuilder(ctx context.Context, req *adminv1.DrainBuilderRequest) (*adminv1.DrainBuilderResponse, error) {
	a, err := s.act(ctx, req.GetReason(), "name", func(ctx context.Context, a *eventsv1.Actor) (action.Result, error) {
		if req.GetName() != "" {
			if err := s.knownBuilder(ctx, req.GetName()); err != nil {
				return action.Result{}, err
			}
		}
		return action.Drain(ctx, s.log, req.GetName(), a)
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.DrainBuilderResponse{Action: a}, nil
}

func (s *server) ResumeBuilder(ctx context.Context, req *adminv1.ResumeBuilderRequest) (*adminv1.ResumeBuilderResponse, error) {
	a, err := s.act(ctx, req.GetReason(), "name", func(ctx context.Context, a *eventsv1.Actor) (action.Result, error) {
		return action.Resume(ctx, s.log, req.GetName(), a)
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.ResumeBuilderResponse{Action: a}, nil
}

// knownBuilder says whether a builder process heartbeats under name, or
// the log has drain facts of it.
func (s *server) knownBuilder(ctx context.Context, name string) error {
	kv, err := s.js.KeyValue(ctx, holdersBucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("holders bucket: %w", err)
	}
	if err == nil {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return fmt.Errorf("holders bucket: %w", err)
		}
		for k := range keys.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue // gone meanwhile
			}
			var hb struct {
				Builder string `json:"builder"`
			}
			if decodeJSON(e.Value(), &hb) == nil && hb.Builder == name {
				return nil
			}
		}
	}
	b, _, err := action.LoadBuilder(ctx, s.log, name)
	if err != nil {
		return err
	}
	if b.Facts == 0 {
		return fmt.Errorf("builder %q: no builder process of that name is alive (ekactl builders lists them): %w", name, ErrNotFound)
	}
	return nil
}
