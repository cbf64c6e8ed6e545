package natsembed

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// BenchmarkAppend measures what the fsync setting costs: publishes of a
// 300-byte event with a message id to a file stream, one acknowledged at a
// time (a stage's Append) and pipelined 1,024 deep (AppendMany), with the
// default sync interval and with SyncAlways. Run:
//
//	go test -run XXX -bench Append -benchtime 20000x ./libs/natsembed
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []bool{false, true} {
		for _, pipelined := range []bool{false, true} {
			name := "sync_interval=default"
			if sync {
				name = "sync_interval=always"
			}
			if pipelined {
				name += "/pipelined"
			} else {
				name += "/one-at-a-time"
			}
			b.Run(name, func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				s, err := Start(Config{DataDir: b.TempDir(), Port: RandomPort, SyncAlways: sync, Logger: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Shutdown(context.Background())
				nc, err := nats.Connect(s.ClientURL())
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "E", Subjects: []string{"e.>"}, Storage: jetstream.FileStorage}); err != nil {
					b.Fatal(err)
				}
				payload := make([]byte, 300)
				msg := func(i int) *nats.Msg {
					return &nats.Msg{Subject: "e." + strconv.Itoa(i%1000), Data: payload, Header: nats.Header{jetstream.MsgIDHeader: {strconv.Itoa(i)}}}
				}
				b.ResetTimer()
				if !pipelined {
					for i := range b.N {
						if _, err := js.PublishMsg(ctx, msg(i)); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					var window []jetstream.PubAckFuture
					wait := func(fs []jetstream.PubAckFuture) {
						for _, f := range fs {
							select {
							case <-f.Ok():
							case err := <-f.Err():
								b.Fatal(err)
							}
						}
					}
					for i := range b.N {
						f, err := js.PublishMsgAsync(msg(i))
						if err != nil {
							b.Fatal(err)
						}
						if window = append(window, f); len(window) == 1024 {
							wait(window)
							window = window[:0]
						}
					}
					wait(window)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}
