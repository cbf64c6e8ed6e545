package telemetry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/natstest"
)

// gauge reads one series from the registry without creating it (unlike
// WithLabelValues), so "absent" is observable.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.Metric {
			if len(s.Label) != len(labels) {
				continue
			}
			for _, lp := range s.Label {
				if labels[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			return s.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func waitGauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	natstest.Eventually(t, 10*time.Second, func() bool {
		got, ok = gauge(t, reg, name, labels)
		return ok && got == want
	}, fmt.Sprintf("%s%v = %v (present %v), want %v", name, labels, got, ok, want))
}

func TestWatchConsumers(t *testing.T) {
	s := natstest.NewServer(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      "EKACI_WORK",
		Subjects:  []string{"ekaci.work.>"},
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "ekaci.work.build.x86_64-linux.local", fmt.Appendf(nil, "build %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Not builds: must not show up as a queue.
	if _, err := js.Publish(ctx, "ekaci.work.report.abc", []byte("report")); err != nil {
		t.Fatal(err)
	}

	m := NewMetrics()
	reg := m.Registry()
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.WatchConsumers(wctx, js, 20*time.Millisecond, zerolog.New(zerolog.NewTestWriter(t)))
	}()

	local := map[string]string{"system": "x86_64-linux", "class": "local"}
	waitGauge(t, reg, "ekaci_build_queue_depth", local, 3)
	if n := seriesCount(t, reg, "ekaci_build_queue_depth"); n != 1 {
		t.Errorf("%d queue-depth series, want 1 (reports are not builds)", n)
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "builder-local",
		FilterSubject: "ekaci.work.build.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	lagLabels := map[string]string{"stream": "EKACI_WORK", "consumer": "builder-local"}
	waitGauge(t, reg, "ekaci_consumer_lag_messages", lagLabels, 3)

	// One build taken and finished: gone from the queue and from the lag.
	fetch := func() jetstream.Msg {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			return msg
		}
		t.Fatalf("no message fetched: %v", batch.Error())
		return nil
	}
	if err := fetch().DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, reg, "ekaci_consumer_lag_messages", lagLabels, 2)
	waitGauge(t, reg, "ekaci_build_queue_depth", local, 2)

	// One build taken and running (delivered, not acked): no longer lag,
	// still in the work queue.
	running := fetch()
	waitGauge(t, reg, "ekaci_consumer_lag_messages", lagLabels, 1)
	waitGauge(t, reg, "ekaci_build_queue_depth", local, 2)

	// Drain the rest: the queue series stays, at 0.
	if err := running.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fetch().DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitGauge(t, reg, "ekaci_build_queue_depth", local, 0)
	waitGauge(t, reg, "ekaci_consumer_lag_messages", lagLabels, 0)

	// A deleted consumer loses its series.
	if err := stream.DeleteConsumer(ctx, "builder-local"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, ok := gauge(t, reg, "ekaci_consumer_lag_messages", lagLabels)
		return !ok
	}, "lag series of a deleted consumer removed")

	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchConsumers did not return within 10s of cancel")
	}
}

// TestWatchConsumersOtherStreams: lag is sampled for every stream, and a
// server without EKACI_WORK sets no queue depth.
func TestWatchConsumersOtherStreams(t *testing.T) {
	s := natstest.NewServer(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EKACI_EVENTS", Subjects: []string{"ekaci.evt.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, "ekaci.evt.drv.x.DrvQueued", []byte("e")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "recorder", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	m := NewMetrics()
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() { stop(); <-done }()
	go func() {
		defer close(done)
		m.WatchConsumers(wctx, js, 20*time.Millisecond, zerolog.New(zerolog.NewTestWriter(t)))
	}()
	waitGauge(t, m.Registry(), "ekaci_consumer_lag_messages", map[string]string{"stream": "EKACI_EVENTS", "consumer": "recorder"}, 5)
	if n := seriesCount(t, m.Registry(), "ekaci_build_queue_depth"); n != 0 {
		t.Errorf("%d queue-depth series without EKACI_WORK, want 0", n)
	}
}

func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.Metric)
		}
	}
	return 0
}
