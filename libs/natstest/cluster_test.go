package natstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

const deployDir = "../../deploy/nats"

func r3Stream(t *testing.T, ctx context.Context, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	cfg := jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ekaci.evt.>"}, Storage: jetstream.FileStorage, Replicas: 3}
	st, err := js.CreateStream(ctx, cfg)
	// A cluster just formed may not yet count every peer as online
	// (10005: no suitable peers for placement); Provision retries the
	// same way.
	for deadline := time.Now().Add(15 * time.Second); isNoPeers(err) && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		st, err = js.CreateStream(ctx, cfg)
	}
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	// A new replicated stream answers publishes once its Raft group has
	// elected a leader; until then a publish gets no response.
	Eventually(t, 10*time.Second, func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != ""
	}, "the R3 stream never elected a leader")
	return st
}

// publishReady publishes as soon as the stream answers: a stream whose
// leader was just elected can, for a moment, have no responder yet on the
// node the client is connected to (ErrNoStreamResponse: nothing stored).
func publishReady(t *testing.T, ctx context.Context, js jetstream.JetStream, subject, data string) *jetstream.PubAck {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ack, err := js.Publish(ctx, subject, []byte(data))
		if err == nil {
			return ack
		}
		if !errors.Is(err, jetstream.ErrNoStreamResponse) || time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isNoPeers(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10005
}

// The deployed configuration, started as is (ports and dirs aside), gives
// an R3 file stream fsynced on every write, readable from any node.
func TestClusterFromDeployConfig(t *testing.T) {
	servers := NewClusterFromDir(t, deployDir)
	if len(servers) != 3 {
		t.Fatalf("servers = %d, want 3", len(servers))
	}
	for _, s := range servers {
		cfg := s.JetStreamConfig()
		if cfg == nil {
			t.Fatalf("%s: JetStream not enabled", s.Name())
		}
		// sync_interval: always in common.conf must reach the server.
		if !cfg.SyncAlways {
			t.Errorf("%s: JetStream SyncAlways = false, want true (sync_interval: always)", s.Name())
		}
		if want := int64(64) << 30; cfg.MaxStore != want {
			t.Errorf("%s: max_file_store = %d, want %d", s.Name(), cfg.MaxStore, want)
		}
		if s.ClusterName() != "ekaci" {
			t.Errorf("%s: cluster name = %q, want ekaci", s.Name(), s.ClusterName())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, js0 := Connect(t, servers[0])
	st := r3Stream(t, ctx, js0)
	for i := 1; i <= 3; i++ {
		ack := publishReady(t, ctx, js0, fmt.Sprintf("ekaci.evt.drv.h%d.started", i), fmt.Sprintf("event %d", i))
		if ack.Sequence != uint64(i) {
			t.Fatalf("publish %d: sequence %d", i, ack.Sequence)
		}
	}

	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Config.Replicas != 3 {
		t.Errorf("stream replicas = %d, want 3", info.Config.Replicas)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Errorf("stream cluster info = %+v, want a leader and 2 replicas", info.Cluster)
	}

	// Read back through another node.
	_, js1 := Connect(t, servers[1])
	st1, err := js1.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream via %s: %v", servers[1].Name(), err)
	}
	for i := uint64(1); i <= 3; i++ {
		m, err := st1.GetMsg(ctx, i)
		if err != nil {
			t.Fatalf("get %d via %s: %v", i, servers[1].Name(), err)
		}
		if want := fmt.Sprintf("event %d", i); string(m.Data) != want {
			t.Errorf("message %d = %q, want %q", i, m.Data, want)
		}
	}
}

// With one node of three down the stream still has a quorum and accepts
// writes; with two down it has none and must refuse them.
func TestClusterQuorum(t *testing.T) {
	servers := NewClusterFromDir(t, deployDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, js := Connect(t, servers[0])
	r3Stream(t, ctx, js)
	publishReady(t, ctx, js, "ekaci.evt.drv.h1.started", "before")

	// Stop the stream's leader, the harder case: a new one must be elected.
	var down *server.Server
	Eventually(t, 10*time.Second, func() bool {
		for _, s := range servers {
			if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "EVENTS") {
				down = s
				return true
			}
		}
		return false
	}, "EVENTS has a leader")
	var up []*server.Server
	for _, s := range servers {
		if s != down {
			up = append(up, s)
		}
	}
	down.Shutdown()
	down.WaitForShutdown()
	WaitForMetaLeader(t, servers, 30*time.Second)

	_, js = Connect(t, up[0])
	publish := func(data string) error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "ekaci.evt.drv.h1.finished", []byte(data))
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := publish("after one down")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write accepted within 30s of stopping %s: %v", down.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	_, js2 := Connect(t, up[1])
	st, err := js2.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream via %s: %v", up[1].Name(), err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.State.LastSeq < 2 {
		t.Fatalf("last sequence = %d, want >= 2 (the write after the failure)", info.State.LastSeq)
	}
	m, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil || string(m.Data) != "after one down" {
		t.Fatalf("last message = %v, %v; want %q", m, err, "after one down")
	}
	offline := 0
	for _, p := range info.Cluster.Replicas {
		if p.Offline {
			offline++
		}
	}
	if offline != 1 || info.Cluster.Leader == down.Name() {
		t.Errorf("cluster info leader %q replicas %+v: want a new leader and 1 offline peer", info.Cluster.Leader, info.Cluster.Replicas)
	}

	// Two of three down: no quorum, so no acknowledged write.
	up[1].Shutdown()
	up[1].WaitForShutdown()
	err = publish("without quorum")
	if err == nil {
		t.Fatal("publish acknowledged with 2 of 3 nodes down")
	}
	t.Logf("publish without quorum: %v", err)
}
