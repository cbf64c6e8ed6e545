package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
)

// errNotCaughtUp: the read model did not reach a read's after_seq in time.
var errNotCaughtUp = errors.New("the read model has not caught up")

// errNATS: NATS is not connected, or did not answer in time.
var errNATS = errors.New("NATS unavailable")

// natsTimeout bounds a call that needs NATS: a reconnecting client would
// otherwise wait as long as the caller does.
const natsTimeout = 15 * time.Second

// withNATS runs fn with NATS: at once Unavailable when the connection is
// down, and Unavailable too when NATS does not answer within natsTimeout.
func (s *server) withNATS(ctx context.Context, fn func(ctx context.Context) error) error {
	if !s.js.Conn().IsConnected() {
		return fmt.Errorf("%w: not connected to %s (status %v)", errNATS, s.js.Conn().ConnectedUrlRedacted(), s.js.Conn().Status())
	}
	nctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	err := fn(nctx)
	if err != nil && nctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("%w: no answer within %v: %w", errNATS, natsTimeout, err)
	}
	return err
}

// positioner is the model's runner, as the server waits on it.
type positioner interface {
	WaitFor(ctx context.Context, seq uint64) error
	Position() uint64
}

// server implements ekaci.admin.v1.Admin.
type server struct {
	adminv1.UnimplementedAdminServer
	reads  *Reads
	logs   *Logs
	log    action.Log
	js     jetstream.JetStream
	runner positioner
	// models rebuilds the model (RebuildReadModel).
	models *host
	// approved are the webhook's configured logins (Config.Approved).
	approved []string
	// wait bounds how long a read waits for its after_seq.
	wait time.Duration
}

// caughtUp waits until the model has folded seq (0: no wait).
func (s *server) caughtUp(ctx context.Context, seq uint64) error {
	if seq == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	if err := s.runner.WaitFor(wctx, seq); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: at %d after %v, want %d", errNotCaughtUp, s.runner.Position(), s.wait, seq)
	}
	return nil
}

func (s *server) ListChanges(ctx context.Context, req *adminv1.ListChangesRequest) (*adminv1.ListChangesResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.ListChanges(req)
	return out, statusOf(err, "")
}

func (s *server) GetChange(ctx context.Context, req *adminv1.GetChangeRequest) (*adminv1.GetChangeResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.GetChange(req.GetId())
	return out, statusOf(err, "id")
}

func (s *server) GetJobset(ctx context.Context, req *adminv1.GetJobsetRequest) (*adminv1.GetJobsetResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.GetJobset(req.GetId(), req.GetState())
	return out, statusOf(err, "id")
}

func (s *server) GetDerivation(ctx context.Context, req *adminv1.GetDerivationRequest) (*adminv1.GetDerivationResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.GetDerivation(req.GetId())
	return out, statusOf(err, "id")
}

func (s *server) ListFailures(ctx context.Context, req *adminv1.ListFailuresRequest) (*adminv1.ListFailuresResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out, err := s.reads.ListFailures(req.GetJobsetId())
	return out, statusOf(err, "jobset_id")
}

// ListQueues reads the work stream's per-subject counts (the server's
// own index; nothing is replayed).
func (s *server) ListQueues(ctx context.Context, _ *adminv1.ListQueuesRequest) (*adminv1.ListQueuesResponse, error) {
	prefix := eventlog.WorkRoot + ".build."
	var info *jetstream.StreamInfo
	err := s.withNATS(ctx, func(ctx context.Context) error {
		st, err := s.js.Stream(ctx, eventlog.WorkStream)
		if err != nil {
			return fmt.Errorf("work stream: %w", err)
		}
		info, err = st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
		return err
	})
	if err != nil {
		return nil, statusOf(err, "")
	}
	out := &adminv1.ListQueuesResponse{}
	for subj, n := range info.State.Subjects {
		rest := strings.TrimPrefix(subj, prefix)
		i := strings.LastIndexByte(rest, '.')
		if i < 0 || n == 0 {
			continue
		}
		out.Queues = append(out.Queues, &adminv1.Queue{System: rest[:i], Pool: rest[i+1:], Waiting: n})
	}
	slices.SortFunc(out.Queues, func(a, b *adminv1.Queue) int {
		return strings.Compare(a.GetSystem()+"."+a.GetPool(), b.GetSystem()+"."+b.GetPool())
	})
	return out, nil
}

// holdersBucket is the builders' heartbeat bucket (services/builder).
const holdersBucket = "ekaci_holders"

// ListBuilders reads the builders' heartbeats (slots), and from the model
// what each builds and whether its name is drained; then the drained
// names no process runs under.
func (s *server) ListBuilders(ctx context.Context, req *adminv1.ListBuildersRequest) (*adminv1.ListBuildersResponse, error) {
	if err := s.caughtUp(ctx, req.GetAfterSeq()); err != nil {
		return nil, statusOf(err, "after_seq")
	}
	out := &adminv1.ListBuildersResponse{}
	if !s.js.Conn().IsConnected() {
		return nil, statusOf(fmt.Errorf("%w: not connected", errNATS), "")
	}
	drains, err := s.reads.drains()
	if err != nil {
		return nil, statusOf(err, "")
	}
	kv, err := s.js.KeyValue(ctx, holdersBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return withDrainedIdle(out, drains), nil // no builder ever started
	}
	if err != nil {
		return nil, statusOf(fmt.Errorf("holders bucket: %w", err), "")
	}
	running, err := s.reads.building()
	if err != nil {
		return nil, statusOf(err, "")
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, statusOf(fmt.Errorf("holders bucket: %w", err), "")
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // gone meanwhile
		}
		b := &adminv1.Builder{Holder: k, LastSeen: timestamppb.New(e.Created()), RunningDrvIds: running[k]}
		var hb struct {
			Builder string    `json:"builder"`
			Host    string    `json:"host"`
			Since   time.Time `json:"since"`
			Slots   uint32    `json:"slots"`
		}
		if decodeJSON(e.Value(), &hb) == nil {
			b.Name, b.Host, b.Since, b.Slots = hb.Builder, hb.Host, timestamppb.New(hb.Since), hb.Slots
		}
		if d := drains[b.Name]; d.drained {
			b.Drained, b.DrainedBy = true, d.actor
		}
		slices.Sort(b.RunningDrvIds)
		b.Running = uint32(len(b.RunningDrvIds))
		out.Builders = append(out.Builders, b)
	}
	slices.SortFunc(out.Builders, func(a, b *adminv1.Builder) int { return strings.Compare(a.GetHolder(), b.GetHolder()) })
	return withDrainedIdle(out, drains), nil
}

// withDrainedIdle adds the drained names no live process runs under (no
// holder), sorted by name, after the processes: a builder started under
// such a name takes no work until resumed.
func withDrainedIdle(out *adminv1.ListBuildersResponse, drains map[string]drained) *adminv1.ListBuildersResponse {
	live := map[string]bool{}
	for _, b := range out.Builders {
		live[b.GetName()] = true
	}
	var idle []*adminv1.Builder
	for name, d := range drains {
		if d.drained && !live[name] {
			idle = append(idle, &adminv1.Builder{Name: name, Drained: true, DrainedBy: d.actor})
		}
	}
	slices.SortFunc(idle, func(a, b *adminv1.Builder) int { return strings.Compare(a.GetName(), b.GetName()) })
	out.Builders = append(out.Builders, idle...)
	return out
}

func (s *server) TailLog(req *adminv1.TailLogRequest, stream adminv1.Admin_TailLogServer) error {
	err := s.logs.Tail(stream.Context(), req.GetDrvId(), req.GetAttempt(), req.GetFollow(), func(b []byte) error {
		return stream.Send(&adminv1.TailLogResponse{Data: b})
	})
	return statusOf(err, "drv_id")
}

// WatchJobset sends the jobset with its counts, then again after every
// batch the model folds that moved one of its derivations, with those
// transitions, until it concludes.
func (s *server) WatchJobset(req *adminv1.WatchJobsetRequest, stream adminv1.Admin_WatchJobsetServer) error {
	ctx := stream.Context()
	seen := map[string]uint64{} // derivation id → last transition sent
	first := true
	for {
		pos := s.runner.Position()
		resp, done, err := s.reads.watch(req.GetId(), seen)
		if err != nil {
			return statusOf(err, "id")
		}
		if first || len(resp.Transitions) > 0 || done {
			if first {
				resp.Transitions = nil // the history is GetDerivation's; a watch starts now
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			first = false
		}
		if done {
			return nil
		}
		if err := s.runner.WaitFor(ctx, pos+1); err != nil {
			return statusOf(err, "")
		}
	}
}

func (s *server) Retry(ctx context.Context, req *adminv1.RetryRequest) (*adminv1.RetryResponse, error) {
	id := req.GetDrvId()
	if strings.HasPrefix(id, "/") {
		var err error
		if id, err = s.reads.idOf(id); err != nil {
			return nil, statusOf(err, "drv_id")
		}
	}
	a := actor(ctx, req.GetReason())
	var res action.Result
	err := s.withNATS(ctx, func(ctx context.Context) (err error) {
		res, err = action.Retry(ctx, s.log, id, a)
		return err
	})
	if err != nil {
		return nil, statusOf(err, "drv_id")
	}
	return &adminv1.RetryResponse{Action: &adminv1.Action{Seq: res.Seq, Already: res.Already, Actor: a}}, nil
}

func (s *server) CancelJobset(ctx context.Context, req *adminv1.CancelJobsetRequest) (*adminv1.CancelJobsetResponse, error) {
	a := actor(ctx, req.GetReason())
	var res action.Result
	err := s.withNATS(ctx, func(ctx context.Context) (err error) {
		res, err = action.CancelJobset(ctx, s.log, req.GetId(), a)
		return err
	})
	if err != nil {
		return nil, statusOf(err, "id")
	}
	return &adminv1.CancelJobsetResponse{Action: &adminv1.Action{Seq: res.Seq, Already: res.Already, Actor: a}}, nil
}

func (s *server) CancelChange(ctx context.Context, req *adminv1.CancelChangeRequest) (*adminv1.CancelChangeResponse, error) {
	a := actor(ctx, req.GetReason())
	var res action.Result
	err := s.withNATS(ctx, func(ctx context.Context) (err error) {
		res, err = action.CancelChange(ctx, s.log, req.GetId(), a)
		return err
	})
	if err != nil {
		return nil, statusOf(err, "id")
	}
	return &adminv1.CancelChangeResponse{Action: &adminv1.Action{Seq: res.Seq, Already: res.Already, Actor: a}}, nil
}

func (s *server) RestartJobset(ctx context.Context, req *adminv1.RestartJobsetRequest) (*adminv1.RestartJobsetResponse, error) {
	a := actor(ctx, req.GetReason())
	var res action.Result
	err := s.withNATS(ctx, func(ctx context.Context) (err error) {
		res, err = action.Restart(ctx, s.log, req.GetId(), a)
		return err
	})
	if err != nil {
		return nil, statusOf(err, "id")
	}
	return &adminv1.RestartJobsetResponse{Action: &adminv1.Action{Seq: res.Seq, Already: res.Already, Actor: a}}, nil
}

// RebuildReadModel rebuilds the admin model from the event log beside the
// serving one and swaps it in (see host). It is the only read model this
// server holds: the other stages' models rebuild when their file is
// deleted or their layout version changes, at their next start.
func (s *server) RebuildReadModel(ctx context.Context, req *adminv1.RebuildReadModelRequest) (*adminv1.RebuildReadModelResponse, error) {
	switch req.GetName() {
	case "":
		return nil, invalid("name", "name: empty (this server rebuilds "+ReadModel+")")
	case ReadModel:
	default:
		return nil, statusOf(fmt.Errorf("read model %q: %w (this server rebuilds %s; other stages rebuild theirs when their file is deleted)", req.GetName(), ErrNotFound, ReadModel), "name")
	}
	out, err := s.models.Rebuild(ctx)
	return out, statusOf(err, "name")
}
