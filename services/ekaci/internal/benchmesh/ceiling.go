package benchmesh

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// sampleEvents reads k messages spread evenly over the event log, as
// stored: the ceiling publishes copies of them, so it moves messages of
// the sizes (subject, headers, payload) the schedule appended.
func sampleEvents(ctx context.Context, js jetstream.JetStream, k int) ([]*nats.Msg, error) {
	s, err := js.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("sample the event log: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("sample the event log: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if last < first || last == 0 {
		return nil, fmt.Errorf("sample the event log: it is empty")
	}
	span := last - first + 1
	k = int(min(uint64(k), span))
	out := make([]*nats.Msg, 0, k)
	for i := range k {
		raw, err := s.GetMsg(ctx, first+span*uint64(i)/uint64(k))
		if err != nil {
			return nil, fmt.Errorf("sample the event log: %w", err)
		}
		m := nats.NewMsg("ceiling." + raw.Subject)
		m.Data = raw.Data
		for key, vs := range raw.Header {
			// Expected-sequence guards would refuse the copies; the
			// message id is made unique per copy below.
			if !strings.HasPrefix(key, "Nats-") {
				m.Header[key] = vs
			}
		}
		m.Header.Set(jetstream.MsgIDHeader, raw.Header.Get(jetstream.MsgIDHeader))
		out = append(out, m)
	}
	return out, nil
}

// meanSizes is the mean payload and header size of msgs in bytes.
func meanSizes(msgs []*nats.Msg) (data, header float64) {
	for _, m := range msgs {
		data += float64(len(m.Data))
		for k, vs := range m.Header {
			for _, v := range vs {
				header += float64(len(k) + len(v) + 4) // "k: v\r\n"
			}
		}
	}
	return data / float64(len(msgs)), header / float64(len(msgs))
}

// ceiling measures what the cluster does without ekaci, as the bench's
// ceiling does on one server: n messages (copies of samples, in turn)
// published asynchronously with message ids onto a file-backed stream of
// replicas replicas, consumed by a durable pull consumer that acknowledges
// each one, on two connections of their own; the rate is n over the time
// until the last one is acknowledged.
func ceiling(ctx context.Context, url string, replicas, n int, samples []*nats.Msg) (float64, error) {
	pubConn, err := nats.Connect(url, nats.Name("ceiling-publisher"))
	if err != nil {
		return 0, fmt.Errorf("ceiling: %w", err)
	}
	defer pubConn.Close()
	subConn, err := nats.Connect(url, nats.Name("ceiling-consumer"))
	if err != nil {
		return 0, fmt.Errorf("ceiling: %w", err)
	}
	defer subConn.Close()
	pub, err := jetstream.New(pubConn, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, fmt.Errorf("ceiling: %w", err)
	}
	sub, err := jetstream.New(subConn)
	if err != nil {
		return 0, fmt.Errorf("ceiling: %w", err)
	}
	if _, err := pub.CreateStream(ctx, jetstream.StreamConfig{Name: "CEILING", Subjects: []string{"ceiling.>"},
		Storage: jetstream.FileStorage, Replicas: replicas, Duplicates: eventlog.DefaultDuplicateWindow}); err != nil {
		return 0, fmt.Errorf("ceiling stream: %w", err)
	}
	cons, err := sub.CreateOrUpdateConsumer(ctx, "CEILING", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return 0, fmt.Errorf("ceiling consumer: %w", err)
	}
	var acked atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if acked.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, fmt.Errorf("ceiling consume: %w", err)
	}
	defer cc.Stop()
	start := time.Now()
	for i := range n {
		s := samples[i%len(samples)]
		m := nats.NewMsg(s.Subject)
		m.Data = s.Data
		for k, vs := range s.Header {
			m.Header[k] = vs
		}
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", s.Header.Get(jetstream.MsgIDHeader), i))
		// Back-pressure is what is measured: a publisher with 4,096 acks
		// outstanding waits for the cluster (as the bench's ceiling).
		if _, err := pub.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			return 0, fmt.Errorf("ceiling publish %d: %w", i, err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("ceiling: %d of %d acknowledged: %w", acked.Load(), n, context.Cause(ctx))
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
