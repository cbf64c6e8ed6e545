package admin

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ekaci/ekaci/libs/action"
	"github.com/ekaci/ekaci/libs/buildstate"
	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

var (
	// changes: change id → adminv1.Change.
	changesBucket = []byte("admin_changes")
	// order: requested sequence (8 bytes) → change id, newest last.
	orderBucket = []byte("admin_change_order")
	// jobsets: jobset id → adminv1.Jobset.
	jobsetsBucket = []byte("admin_jobsets")
	// attrs: jobset id, 0, part (4 bytes), index (4 bytes) → JobAttr.
	attrsBucket = []byte("admin_attrs")
	// drvs: derivation id → drvRow (JSON).
	drvsBucket = []byte("admin_drvs")
	// paths: .drv path → derivation id.
	pathsBucket = []byte("admin_paths")
	// history: derivation id, 0, sequence (8 bytes) → adminv1.Transition.
	historyBucket = []byte("admin_history")
	// dependents: input id, 0, dependent id → nothing.
	dependentsBucket = []byte("admin_dependents")
	// building: derivation id → holder, while it is Building.
	buildingBucket = []byte("admin_building")
	// approvals: contributor id → adminv1.Approval.
	approvalsBucket = []byte("admin_approvals")
	// drains: builder name → drainRow (JSON).
	drainsBucket = []byte("admin_drains")
)

var buckets = [][]byte{changesBucket, orderBucket, jobsetsBucket, attrsBucket, drvsBucket, pathsBucket, historyBucket, dependentsBucket, buildingBucket,
	approvalsBucket, drainsBucket}

// ReadModel names the admin read model (for a shared projection.Feed).
const ReadModel = "admin"

// Model is the admin read model: a projection.Handler that decides
// nothing.
type Model struct{ logger zerolog.Logger }

// NewModel returns the model.
func NewModel(logger zerolog.Logger) *Model { return &Model{logger: logger} }

// Name implements projection.Handler.
func (*Model) Name() string { return ReadModel }

// Filters implements projection.Handler: every fact.
func (*Model) Filters() []string {
	return []string{eventlog.KindFilter(eventlog.Change), eventlog.KindFilter(eventlog.Jobset), eventlog.KindFilter(eventlog.Drv),
		eventlog.KindFilter(eventlog.Contributor), eventlog.KindFilter(eventlog.Builder)}
}

// Version implements projection.Versioned. 2: changes carry their pull
// request. 3: approvals and drains.
func (*Model) Version() uint32 { return 3 }

// Reset implements projection.Versioned.
func (*Model) Reset(tx *bolt.Tx) error {
	for _, b := range buckets {
		if tx.Bucket(b) == nil {
			continue
		}
		if err := tx.DeleteBucket(b); err != nil {
			return fmt.Errorf("delete %s: %w", b, err)
		}
	}
	return nil
}

// Init implements projection.Handler.
func (*Model) Init(tx *bolt.Tx) error {
	for _, b := range buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

// Apply implements projection.Handler.
func (m *Model) Apply(tx *bolt.Tx, rec eventlog.Record, _ *projection.Decisions) error {
	switch rec.Aggregate {
	case eventlog.Change:
		return m.change(tx, rec)
	case eventlog.Jobset:
		return m.jobset(tx, rec)
	case eventlog.Drv:
		return m.drv(tx, rec)
	case eventlog.Contributor:
		return m.contributor(tx, rec)
	case eventlog.Builder:
		return m.builder(tx, rec)
	}
	return nil
}

// contributor folds an approval fact with action.Contributor, the fold
// the webhook decides with.
func (m *Model) contributor(tx *bolt.Tx, rec eventlog.Record) error {
	a := &adminv1.Approval{}
	if _, err := getProto(tx, approvalsBucket, rec.ID, a); err != nil {
		return err
	}
	c := action.Contributor{Login: a.GetLogin(), Approved: a.GetApproved(), Actor: a.GetActor(), Seq: a.GetSeq()}
	c.Apply(rec)
	if c.Seq == a.GetSeq() {
		return nil // not an approval fact
	}
	return putProto(tx, approvalsBucket, rec.ID, &adminv1.Approval{Login: c.Login, Approved: c.Approved, Actor: c.Actor, At: timestamppb.New(c.At), Seq: c.Seq})
}

// drainRow is a builder name's drain state.
type drainRow struct {
	Name    string `json:"name"`
	Drained bool   `json:"drained"`
	Actor   []byte `json:"actor"` // eventsv1.Actor, protobuf
	Seq     uint64 `json:"seq"`
}

// builder folds a drain fact with action.Builder, the fold the builders
// follow.
func (m *Model) builder(tx *bolt.Tx, rec eventlog.Record) error {
	var b action.Builder
	b.Apply(rec)
	if b.Seq == 0 {
		return nil // not a drain fact
	}
	actor, err := proto.MarshalOptions{Deterministic: true}.Marshal(b.Actor)
	if err != nil {
		return err
	}
	v, err := json.Marshal(drainRow{Name: b.Name, Drained: b.Drained, Actor: actor, Seq: b.Seq})
	if err != nil {
		return err
	}
	return tx.Bucket(drainsBucket).Put([]byte(b.Name), v)
}

func getProto[T proto.Message](tx *bolt.Tx, bucket []byte, key string, msg T) (bool, error) {
	v := tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		return false, nil
	}
	if err := proto.Unmarshal(v, msg); err != nil {
		return false, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

func putProto(tx *bolt.Tx, bucket []byte, key string, msg proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), v)
}

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func (m *Model) change(tx *bolt.Tx, rec eventlog.Record) error {
	c := &adminv1.Change{}
	found, err := getProto(tx, changesBucket, rec.ID, c)
	if err != nil {
		return err
	}
	if !found {
		c.Id = rec.ID
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_ChangeRequested:
		if c.RequestedAt != nil {
			return nil // a repeat (another delivery joining the change)
		}
		r := p.ChangeRequested
		c.RepoUrl, c.RepoName, c.HeadCommit, c.BaseCommit, c.Source = r.GetRepoUrl(), r.GetRepoName(), r.GetHeadCommit(), r.GetBaseCommit(), r.GetSource()
		c.PullRequest = r.GetGithub().GetPullRequest()
		c.RequestedAt = timestamppb.New(rec.Time)
		if c.State == "" {
			c.State = "requested"
		}
		if err := tx.Bucket(orderBucket).Put(seqBytes(rec.Seq), []byte(rec.ID)); err != nil {
			return err
		}
	case *eventsv1.Event_ChangeCheckedOut:
		c.State = "checked-out"
	case *eventsv1.Event_ChangeCheckoutFailed:
		c.State, c.Summary = "checkout-failed", p.ChangeCheckoutFailed.GetError()
	case *eventsv1.Event_ChangeConfigRead:
		c.State = "configured"
		c.JobsetIds = nil
		for _, job := range p.ChangeConfigRead.GetJobs() {
			c.JobsetIds = append(c.JobsetIds, eventlog.JobsetID(rec.ID, job))
		}
	case *eventsv1.Event_ChangeConfigInvalid:
		c.State, c.Summary = "config-invalid", p.ChangeConfigInvalid.GetError()
	case *eventsv1.Event_ChangeConcluded:
		c.State, c.Conclusion, c.Summary = "concluded", p.ChangeConcluded.GetConclusion(), p.ChangeConcluded.GetSummary()
		if ids := p.ChangeConcluded.GetJobsetIds(); len(ids) > 0 {
			c.JobsetIds = ids
		}
		c.ConcludedAt = timestamppb.New(rec.Time)
	case *eventsv1.Event_ChangeCancelled:
		c.CancelledBy = p.ChangeCancelled.GetActor()
	default:
		return nil
	}
	return putProto(tx, changesBucket, rec.ID, c)
}

func attrKey(jobsetID string, part uint32, i int) []byte {
	k := append([]byte(jobsetID), 0)
	k = binary.BigEndian.AppendUint32(k, part)
	return binary.BigEndian.AppendUint32(k, uint32(i))
}

// putAttrs stores one part of a jobset's attributes; the first copy wins.
func putAttrs(tx *bolt.Tx, jobsetID string, part uint32, attrs []*eventsv1.JobAttr) error {
	b := tx.Bucket(attrsBucket)
	prefix := attrKey(jobsetID, part, 0)[:len(jobsetID)+5]
	if k, _ := b.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return nil
	}
	for i, a := range attrs {
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		if err != nil {
			return err
		}
		if err := b.Put(attrKey(jobsetID, part, i), v); err != nil {
			return err
		}
	}
	return nil
}

func (m *Model) jobset(tx *bolt.Tx, rec eventlog.Record) error {
	js := &adminv1.Jobset{}
	found, err := getProto(tx, jobsetsBucket, rec.ID, js)
	if err != nil {
		return err
	}
	if !found {
		js.Id, js.State = rec.ID, "created"
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_JobsetCreated:
		js.ChangeId, js.Job = p.JobsetCreated.GetChangeId(), p.JobsetCreated.GetJob()
	case *eventsv1.Event_JobsetAttrsListed:
		if err := putAttrs(tx, rec.ID, p.JobsetAttrsListed.GetPart(), p.JobsetAttrsListed.GetAttrs()); err != nil {
			return err
		}
	case *eventsv1.Event_JobsetEvaluated:
		e := p.JobsetEvaluated
		if err := putAttrs(tx, rec.ID, e.GetAttrParts(), e.GetAttrs()); err != nil {
			return err
		}
		if js.State == "created" {
			js.State = "evaluated"
		}
		js.AttrCount = e.GetAttrCount()
		if js.AttrCount == 0 {
			js.AttrCount = uint32(len(e.GetAttrs()))
		}
	case *eventsv1.Event_JobsetEvalFailed:
		if js.State == "created" {
			js.State, js.Error = "eval-failed", p.JobsetEvalFailed.GetError()
		}
	case *eventsv1.Event_JobsetConcluded:
		js.State, js.Conclusion, js.Counts = "concluded", p.JobsetConcluded.GetConclusion(), p.JobsetConcluded.GetCounts()
		if js.ChangeId == "" {
			js.ChangeId, js.Job = p.JobsetConcluded.GetChangeId(), p.JobsetConcluded.GetJob()
		}
	case *eventsv1.Event_JobsetCancelled:
		js.CancelledBy = p.JobsetCancelled.GetActor()
		if js.ChangeId == "" {
			js.ChangeId = p.JobsetCancelled.GetChangeId()
		}
	case *eventsv1.Event_JobsetRestarted:
		js.State, js.Conclusion, js.Counts, js.CancelledBy = "evaluated", eventsv1.Conclusion_CONCLUSION_UNSPECIFIED, nil, nil
		js.Round = p.JobsetRestarted.GetRound()
	default:
		return nil
	}
	return putProto(tx, jobsetsBucket, rec.ID, js)
}

// drvRow is a derivation's stored row: its folded state, and what the
// API shows of it.
type drvRow struct {
	Drv buildstate.Drv `json:"drv"`
	D   []byte         `json:"d"` // adminv1.Derivation, protobuf
}

func getDrv(tx *bolt.Tx, id string) (*drvRow, *adminv1.Derivation, error) {
	v := tx.Bucket(drvsBucket).Get([]byte(id))
	if v == nil {
		return nil, nil, nil
	}
	var row drvRow
	if err := json.Unmarshal(v, &row); err != nil {
		return nil, nil, fmt.Errorf("decode %s/%s: %w", drvsBucket, id, err)
	}
	d := &adminv1.Derivation{}
	if err := proto.Unmarshal(row.D, d); err != nil {
		return nil, nil, fmt.Errorf("decode %s/%s: %w", drvsBucket, id, err)
	}
	return &row, d, nil
}

func histKey(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(id), 0), seq)
}

func pairKey(a, b string) []byte { return append(append([]byte(a), 0), b...) }

func (m *Model) drv(tx *bolt.Tx, rec eventlog.Record) error {
	row, d, err := getDrv(tx, rec.ID)
	if err != nil {
		return err
	}
	if row == nil {
		row, d = &drvRow{}, &adminv1.Derivation{Id: rec.ID}
	}
	next, err := buildstate.Next(row.Drv, rec.Event)
	if err != nil {
		m.logger.Warn().Err(err).Str("drv", rec.ID).Uint64("seq", rec.Seq).Msg("admin model: fact does not fold; not recorded")
		return nil
	}
	prev := row.Drv
	row.Drv = next
	t := &adminv1.Transition{Seq: rec.Seq, At: timestamppb.New(rec.Time), Fact: rec.Fact, State: next.State.String()}
	if rec.RecordedOn != "" {
		t.Fact = string(buildstate.KindDependencyFailed)
	}
	attempt := func(n uint32) *adminv1.Attempt {
		for _, a := range d.Attempts {
			if a.GetNumber() == n {
				return a
			}
		}
		return nil
	}
	switch p := rec.Event.GetPayload().(type) {
	case *eventsv1.Event_DrvDiscovered:
		di := p.DrvDiscovered
		d.DrvPath, d.Name, d.System, d.InputDrvIds = di.GetDrvPath(), di.GetName(), di.GetSystem(), di.GetInputDrvs()
		if d.Name == "" {
			d.Name = nameOf(di.GetDrvPath())
		}
		if err := tx.Bucket(pathsBucket).Put([]byte(di.GetDrvPath()), []byte(rec.ID)); err != nil {
			return err
		}
		for _, in := range di.GetInputDrvs() {
			if err := tx.Bucket(dependentsBucket).Put(pairKey(in, rec.ID), nil); err != nil {
				return err
			}
		}
	case *eventsv1.Event_DrvBuildable:
		t.Attempt = p.DrvBuildable.GetAttempt()
	case *eventsv1.Event_DrvBuildStarted:
		s := p.DrvBuildStarted
		t.Attempt, t.Builder = s.GetAttempt(), s.GetBuilder()
		if a := attempt(s.GetAttempt()); a != nil {
			a.Builder, a.Holder, a.StartedAt = s.GetBuilder(), s.GetHolder(), timestamppb.New(rec.Time)
		} else {
			d.Attempts = append(d.Attempts, &adminv1.Attempt{Number: s.GetAttempt(), Builder: s.GetBuilder(), Holder: s.GetHolder(), StartedAt: timestamppb.New(rec.Time)})
		}
		if err := tx.Bucket(buildingBucket).Put([]byte(rec.ID), []byte(s.GetHolder())); err != nil {
			return err
		}
	case *eventsv1.Event_DrvBuildSucceeded:
		s := p.DrvBuildSucceeded
		t.Attempt = s.GetAttempt()
		if a := attempt(s.GetAttempt()); a != nil && s.GetAttempt() != 0 {
			a.Outcome, a.DurationMs = rec.Fact, s.GetDurationMs()
		}
		d.Detail, d.CauseDrvId = "", ""
	case *eventsv1.Event_DrvBuildFailedRetry:
		f := p.DrvBuildFailedRetry
		t.Attempt = f.GetAttempt()
		if a := attempt(f.GetAttempt()); a != nil {
			a.Outcome, a.DurationMs = rec.Fact, f.GetDurationMs()
		}
		d.Detail = f.GetLogTail()
	case *eventsv1.Event_DrvBuildFailed:
		f := p.DrvBuildFailed
		t.Attempt = f.GetAttempt()
		if a := attempt(f.GetAttempt()); a != nil {
			a.Outcome, a.DurationMs = rec.Fact, f.GetDurationMs()
		}
		d.Detail = f.GetLogTail()
	case *eventsv1.Event_DrvInterrupted:
		i := p.DrvInterrupted
		t.Attempt, t.Actor = i.GetAttempt(), i.GetActor()
		if a := attempt(i.GetAttempt()); a != nil && a.Outcome == "" {
			a.Outcome = rec.Fact
		}
		d.Detail = i.GetDetail()
	case *eventsv1.Event_DrvDependencyFailed:
		d.CauseDrvId = p.DrvDependencyFailed.GetCauseDrvId()
	case *eventsv1.Event_DrvBlocked:
		d.CauseDrvId = p.DrvBlocked.GetCauseDrvId()
	case *eventsv1.Event_DrvRequeued:
		t.Attempt, t.Actor = p.DrvRequeued.GetNextAttempt(), p.DrvRequeued.GetActor()
		d.Detail, d.CauseDrvId = "", ""
	}
	if prev.State == buildstate.Building && next.State != buildstate.Building {
		if err := tx.Bucket(buildingBucket).Delete([]byte(rec.ID)); err != nil {
			return err
		}
	}
	d.State, d.Attempt, d.Interruption = next.State.String(), next.Attempt, next.Interruption
	if next.State != buildstate.Interrupted {
		d.Interruption = eventsv1.InterruptKind_INTERRUPT_KIND_UNSPECIFIED
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
	if err != nil {
		return err
	}
	row.D = raw
	v, err := json.Marshal(row)
	if err != nil {
		return err
	}
	if err := tx.Bucket(drvsBucket).Put([]byte(rec.ID), v); err != nil {
		return err
	}
	tv, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	if err != nil {
		return err
	}
	return tx.Bucket(historyBucket).Put(histKey(rec.ID, rec.Seq), tv)
}

// nameOf is a .drv path's name: /nix/store/<hash>-<name>.drv.
func nameOf(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if _, rest, ok := strings.Cut(base, "-"); ok {
		base = rest
	}
	return strings.TrimSuffix(base, ".drv")
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
