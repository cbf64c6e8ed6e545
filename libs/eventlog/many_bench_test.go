package eventlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/natstest"
)

// BenchmarkAppendMany appends batches of 1,024 guarded events pipelined,
// as a projection's decisions does, on a handle with and without nats.go's
// per-message async publish timeout (what service.Connect sets). Run:
//
//	go test -run XXX -bench AppendMany -benchtime 50x -count 3 ./libs/eventlog
func BenchmarkAppendMany(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []jetstream.JetStreamOpt
	}{
		{"no async publish timeout", nil},
		{"async publish timeout 30s", []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(30 * time.Second)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			nc, _ := natstest.Connect(b, natstest.NewServer(b))
			js, err := jetstream.New(nc, tc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			if err := eventlog.Provision(ctx, js, eventlog.StreamOptions{}); err != nil {
				b.Fatal(err)
			}
			l := eventlog.New(js)
			items := make([]eventlog.Item, 1024)
			b.ResetTimer()
			for n := range b.N {
				for i := range items {
					id := fmt.Sprintf("d%d-%d", n, i)
					items[i] = eventlog.Item{ID: id, Event: discovered("disc-"+id, "/nix/store/"+id+".drv"), Expect: true}
				}
				_, errs, err := l.AppendMany(ctx, items)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range errs {
					if e != nil {
						b.Fatal(e)
					}
				}
			}
			b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "events/s")
		})
	}
}
