package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/pbjson"
)

// Headers set on every message ekaci publishes.
const (
	HeaderEventType = "Ekaci-Event-Type"
	HeaderContent   = "Content-Type"
	contentJSON     = "application/json"
)

// contentJSONValue is every message's Content-Type, shared: headers are
// only read once built (Add would append to a copy, its capacity being 1).
var contentJSONValue = []string{contentJSON}

// Payloads are protojson with proto field names, read with unknown fields
// discarded; pbjson writes and reads them without reflection (generated
// code) and leaves anything unusual to protojson itself.
var (
	marshal   = pbjson.Marshal
	unmarshal = pbjson.Unmarshal
)

// Log appends events to EKACI_EVENTS and reads them back.
type Log struct {
	js         jetstream.JetStream
	appended   func(aggregate, fact string)
	ackTimeout time.Duration
	health     func(component string, err error)
	// replicas caches whether the event stream is replicated: 0 not yet
	// known, 1 one replica, 2 more (see Load).
	replicas atomic.Int32
}

// Option configures a Log.
type Option func(*Log)

// WithAppendHook calls fn after every successful (non-duplicate) append,
// e.g. to count events in a metric.
func WithAppendHook(fn func(aggregate, fact string)) Option {
	return func(l *Log) { l.appended = fn }
}

// DefaultAckTimeout is how long pipelined appends wait for their
// acknowledgements (see WithAckTimeout): far above a loaded server's
// answer (milliseconds) or a cluster's leader election (seconds).
const DefaultAckTimeout = 30 * time.Second

// WithAckTimeout bounds the wait of AppendMany for acknowledgements: when
// none of a window's acks comes within d, it returns ErrAckTimeout for the
// appends not acknowledged (default DefaultAckTimeout). A sync Append is
// bounded by jetstream's own request timeout.
func WithAckTimeout(d time.Duration) Option {
	return func(l *Log) { l.ackTimeout = d }
}

// WithHealthHook gives the log a readiness sink (telemetry.Health's
// SetReady): components that write through the log report there while a
// transient failure keeps them retrying (err) and when it is over (nil).
func WithHealthHook(fn func(component string, err error)) Option {
	return func(l *Log) { l.health = fn }
}

// SetHealth reports component's readiness to the health hook, if any: err
// while it cannot make progress, nil once it can.
func (l *Log) SetHealth(component string, err error) {
	if l.health != nil {
		l.health(component, err)
	}
}

// New returns a Log over js. The streams must exist (Provision).
func New(js jetstream.JetStream, opts ...Option) *Log {
	l := &Log{js: js, ackTimeout: DefaultAckTimeout}
	for _, o := range opts {
		o(l)
	}
	return l
}

// JetStream returns the handle the log uses.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// AppendOption guards an append.
type AppendOption func(*appendConfig)

type appendConfig struct {
	expect    bool
	expectSeq uint64
}

// ExpectLast makes the append succeed only if the aggregate's last event
// is at stream sequence seq; 0 means the aggregate must not exist yet.
func ExpectLast(seq uint64) AppendOption {
	return func(c *appendConfig) { c.expect, c.expectSeq = true, seq }
}

// Appended describes where an event landed.
type Appended struct {
	Seq       uint64
	Subject   string
	Duplicate bool // the same event id was appended before; nothing was written
}

// Append appends ev on the aggregate id. ev.Id is required and must be
// derived from the fact's cause, so a retried append is de-duplicated.
func (l *Log) Append(ctx context.Context, id string, ev *eventsv1.Event, opts ...AppendOption) (Appended, error) {
	msg, agg, fact, err := l.message(id, ev)
	if err != nil {
		return Appended{}, err
	}
	var cfg appendConfig
	for _, o := range opts {
		o(&cfg)
	}
	var popts []jetstream.PublishOpt
	if cfg.expect {
		popts = append(popts, jetstream.WithExpectLastSequenceForSubject(cfg.expectSeq, AggregateFilter(agg, id)))
	}
	ack, err := l.js.PublishMsg(ctx, msg, popts...)
	if err != nil {
		if isConflict(err) {
			return Appended{}, fmt.Errorf("append %s: %w", msg.Subject, ErrConflict)
		}
		return Appended{}, fmt.Errorf("append %s: %w", msg.Subject, err)
	}
	if !ack.Duplicate && l.appended != nil {
		l.appended(agg, fact)
	}
	return Appended{Seq: ack.Sequence, Subject: msg.Subject, Duplicate: ack.Duplicate}, nil
}

func (l *Log) message(id string, ev *eventsv1.Event) (*nats.Msg, string, string, error) {
	if ev.GetId() == "" {
		return nil, "", "", fmt.Errorf("%w: no event id (derive it from the cause)", ErrBadEvent)
	}
	if !ValidToken(id) {
		return nil, "", "", fmt.Errorf("%w: aggregate id %q is not a subject token", ErrBadEvent, id)
	}
	agg, fact, err := Address(ev)
	if err != nil {
		return nil, "", "", err
	}
	if ev.OccurredAt == nil {
		ev.OccurredAt = timestamppb.Now()
	}
	data, err := marshal(ev)
	if err != nil {
		return nil, "", "", fmt.Errorf("encode %s: %w", ev.GetId(), err)
	}
	msg := &nats.Msg{Subject: Subject(agg, id, fact), Data: data, Header: nats.Header{
		jetstream.MsgIDHeader: {ev.GetId()},
		HeaderEventType:       {TypeName(ev)},
		HeaderContent:         contentJSONValue,
	}}
	return msg, agg, fact, nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// Publish puts a work item (any protobuf message) on subject with a
// message id for de-duplication, readable like events.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, m proto.Message) (uint64, error) {
	msg, err := workMessage(subject, msgID, m)
	if err != nil {
		return 0, err
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack.Sequence, nil
}

func workMessage(subject, msgID string, m proto.Message) (*nats.Msg, error) {
	data, err := marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", subject, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{
		HeaderEventType: {string(m.ProtoReflect().Descriptor().FullName())},
		HeaderContent:   contentJSONValue,
	}}
	if msgID != "" {
		msg.Header[jetstream.MsgIDHeader] = []string{msgID}
	}
	return msg, nil
}

// JSONSize is how many bytes m takes as the log writes it (protojson with
// proto field names): what counts against a message's max payload.
func JSONSize(m proto.Message) int {
	b, _ := marshal(m)
	return len(b)
}

// DecodeWork reads a work item published with Publish into m.
func DecodeWork(data []byte, m proto.Message) error {
	return unmarshal(data, m)
}

// Record is an event read back from the log.
type Record struct {
	Seq       uint64
	Subject   string
	Aggregate string
	ID        string
	Fact      string
	Time      time.Time // when the log stored it
	Event     *eventsv1.Event
	// RecordedOn is set on a transition a batched fact records for
	// another derivation (see Record.Transitions): the derivation on whose
	// subject the fact is. ID's own subjects, which the guards of its
	// later facts check, do not hold it. Empty for a fact read from its
	// own aggregate's subject.
	RecordedOn string
}

// Decode turns a stored message into a Record. A batched fact is refused
// (ErrBatched): it stands for one transition of each derivation it lists,
// which DecodeFacts and Record.Transitions give.
func Decode(subject string, data []byte, seq uint64, stored time.Time) (Record, error) {
	rec, err := decode(subject, data, seq, stored)
	if err == nil && rec.batched() {
		return Record{}, fmt.Errorf("%s (seq %d): %w", subject, seq, ErrBatched)
	}
	return rec, err
}

func decode(subject string, data []byte, seq uint64, stored time.Time) (Record, error) {
	agg, id, fact, ok := parseSubject(subject)
	if !ok {
		return Record{}, fmt.Errorf("%w: subject %s", ErrNotEvent, subject)
	}
	ev := &eventsv1.Event{}
	if err := unmarshal(data, ev); err != nil {
		return Record{}, fmt.Errorf("decode %s (seq %d): %w", subject, seq, err)
	}
	return Record{Seq: seq, Subject: subject, Aggregate: agg, ID: id, Fact: fact, Time: stored, Event: ev}, nil
}

// DecodeMsg decodes a message delivered by a consumer. Like Decode, it
// refuses a batched fact (ErrBatched): a reader whose filter can deliver
// one decodes with DecodeFacts.
func DecodeMsg(m jetstream.Msg) (Record, error) {
	rec, err := DecodeFacts(m)
	if err == nil && rec.batched() {
		return Record{}, fmt.Errorf("%s (seq %d): %w", m.Subject(), rec.Seq, ErrBatched)
	}
	return rec, err
}

// DecodeFacts decodes a message delivered by a consumer, batched facts
// included: fold what it records by ranging over rec.Transitions().
func DecodeFacts(m jetstream.Msg) (Record, error) {
	md, err := m.Metadata()
	if err != nil {
		return Record{}, fmt.Errorf("metadata of %s: %w", m.Subject(), err)
	}
	return decode(m.Subject(), m.Data(), md.Sequence.Stream, md.Timestamp)
}
