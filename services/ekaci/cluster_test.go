package ekaci_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/machines"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/service"
	"github.com/ekaci/ekaci/services/builder"
	"github.com/ekaci/ekaci/services/ekaci"
	"github.com/ekaci/ekaci/services/evaluator"
	"github.com/ekaci/ekaci/services/gitter"
	"github.com/ekaci/ekaci/services/ingress"
	"github.com/ekaci/ekaci/services/notifier"
	"github.com/ekaci/ekaci/services/reader"
	"github.com/ekaci/ekaci/services/recorder"
	"github.com/ekaci/ekaci/services/router"
)

// TestThinSliceOnTheDeployedCluster runs the demo through the 3-node
// cluster of deploy/nats (ports and stores moved), with each stage on its
// own connection, spread over the nodes, and the streams at 3 replicas: the
// mesh, in one test process.
func TestThinSliceOnTheDeployedCluster(t *testing.T) {
	requireNix(t)
	servers := natstest.NewClusterFromDir(t, filepath.Join("..", "..", "deploy", "nats"))
	dir := t.TempDir()
	system := service.CurrentSystem()
	nixOpts := []string{"substituters", ""}
	topo := machines.Topology{Systems: []string{system}, MaxJobs: 2, FODMaxJobs: 1}

	stages := []struct {
		name string
		run  func(ctx context.Context, log *eventlog.Log, env stageEnv) error
	}{
		{"gitter", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return gitter.Run(ctx, gitter.Config{Events: log, Logger: env.logger, GitDir: filepath.Join(dir, "git")})
		}},
		{"reader", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return reader.Run(ctx, reader.Config{Events: log, Logger: env.logger})
		}},
		{"evaluator", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return evaluator.Run(ctx, evaluator.Config{Events: log, Logger: env.logger, NixOptions: nixOpts})
		}},
		{"ingress", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return ingress.Run(ctx, ingress.Config{Events: log, Logger: env.logger, DataDir: filepath.Join(dir, "ingress")})
		}},
		{"router", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return router.Run(ctx, router.Config{Events: log, Logger: env.logger, Routes: topo.Routes()})
		}},
		{"builder", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return builder.Run(ctx, builder.Config{Events: log, Conn: env.conn, Logger: env.logger, Name: "node-builder",
				Pools:      topo.Pools(),
				NixOptions: nixOpts, NoOutputTimeout: time.Minute, BuildLogDir: filepath.Join(dir, "logs")})
		}},
		{"recorder", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return recorder.Run(ctx, recorder.Config{Events: log, Logger: env.logger, DataDir: filepath.Join(dir, "recorder")})
		}},
		{"notifier", func(ctx context.Context, log *eventlog.Log, env stageEnv) error {
			return notifier.Run(ctx, notifier.Config{Events: log, Logger: env.logger, Sink: notifier.NewLocal(testWriter{t})})
		}},
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i, st := range stages {
		node := servers[i%len(servers)]
		nc, js, err := service.Connect(ctx, node.ClientURL(), st.name, eventlog.StreamOptions{Replicas: 3})
		if err != nil {
			t.Fatalf("%s on node %d: %v", st.name, i%len(servers), err)
		}
		t.Cleanup(nc.Close)
		env := stageEnv{conn: nc, logger: zerolog.New(zerolog.NewTestWriter(t)).With().Str("stage", st.name).Str("node", node.Name()).Logger()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.run(ctx, eventlog.New(js), env); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", st.name, err)
			}
		}()
	}

	// The client submits and follows through a node of its own.
	cnc, js, err := service.Connect(ctx, servers[2].ClientURL(), "client", eventlog.StreamOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cnc.Close)
	info, err := js.Stream(ctx, eventlog.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("%s has %d replicas, want 3", eventlog.EventsStream, r)
	}
	log := eventlog.New(js)
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	cr, err := ekaci.Resolve(wctx, ekaci.Request{Repo: makeRepo(t, simpleFiles())})
	if err != nil {
		t.Fatal(err)
	}
	id, err := ekaci.Submit(wctx, log, cr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ekaci.Wait(wctx, log, id, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if out.Conclusion != eventsv1.Conclusion_CONCLUSION_SUCCESS {
		t.Fatalf("conclusion = %v (%s), want success", out.Conclusion, out.Summary)
	}
	for attr, drv := range drvPaths(out) {
		if got := transitions(t, log, drv); len(got) != len(built) || got[len(got)-1] != "build_succeeded" {
			t.Errorf("%s: transitions %v, want %v", attr, got, built)
		}
	}
}

type stageEnv struct {
	conn   *nats.Conn
	logger zerolog.Logger
}
