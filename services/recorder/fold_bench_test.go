package recorder

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/ekaci/ekaci/libs/eventlog"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/projection/projectiontest"
)

// BenchmarkFoldSchedule folds what ekaci-bench's schedule scenario makes
// the recorder fold — every derivation discovered, buildable, started,
// succeeded — straight into the handler, one fsynced transaction per batch
// as the projection runner does, without NATS or event decoding.
func BenchmarkFoldSchedule(b *testing.B) {
	const n, batch = 30000, 1024
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	ids := make([]string, n)
	for i := range ids {
		id := make([]byte, 32)
		for j := range id {
			id[j] = alphabet[rng.IntN(len(alphabet))]
		}
		ids[i] = string(id)
	}
	// Discovery first, then builds in waves: a wave's buildable, the
	// previous wave's started and the one before's succeeded share batches.
	var recs []eventlog.Record
	add := func(id string, ev *eventsv1.Event) {
		recs = append(recs, drvRec(uint64(len(recs)+1), id, ev))
	}
	for _, id := range ids {
		add(id, &eventsv1.Event{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: "/nix/store/" + id + "-pkg-1.0.drv"}}})
	}
	const wave = 341
	for w := 0; w*wave < n+2*wave; w++ {
		for i := w * wave; i < min((w+1)*wave, n); i++ {
			add(ids[i], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildable{DrvBuildable: &eventsv1.DrvBuildable{Attempt: 1}}})
		}
		for i := (w - 1) * wave; i >= 0 && i < min(w*wave, n); i++ {
			add(ids[i], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildStarted{DrvBuildStarted: &eventsv1.DrvBuildStarted{Attempt: 1}}})
		}
		for i := (w - 2) * wave; i >= 0 && i < min((w-1)*wave, n); i++ {
			add(ids[i], &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Attempt: 1, DurationMs: 35}}})
		}
	}
	if len(recs) != 4*n {
		b.Fatalf("%d events, want %d", len(recs), 4*n)
	}
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		db, c := freshModel(b)
		b.StartTimer()
		for start := 0; start < len(recs); start += batch {
			err := db.Update(func(tx *bolt.Tx) error {
				for _, rec := range recs[start:min(start+batch, len(recs))] {
					if err := c.Apply(tx, rec, &projection.Decisions{}); err != nil {
						return err
					}
				}
				if err := c.Flush(tx); err != nil {
					return err
				}
				meta, err := tx.CreateBucketIfNotExists([]byte("_projection"))
				if err != nil {
					return err
				}
				return meta.Put([]byte("recorder"), binary.BigEndian.AppendUint64(nil, recs[min(start+batch, len(recs))-1].Seq))
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/event")
	// Mostly fsync waits above; the CPU (of the whole process, the set-up
	// of each round included) is what this model costs.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N*len(recs)), "cpu-ns/event")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSettleLargeJobset: one jobset of n attributes, each its own
// derivation, then every derivation succeeds (cached) and the jobset
// concludes. Each settling derivation rewrites its jobset's row, so the
// row's size must not grow with the number of attributes.
func BenchmarkSettleLargeJobset(b *testing.B) {
	const n, batch = 20000, 1024
	jobset := eventlog.JobsetID("change", "packages")
	var recs []eventlog.Record
	var attrs []*eventsv1.JobAttr
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032d", i)
		path := "/nix/store/" + ids[i] + "-pkg.drv"
		recs = append(recs, drvRec(uint64(len(recs)+1), ids[i], &eventsv1.Event{Payload: &eventsv1.Event_DrvDiscovered{DrvDiscovered: &eventsv1.DrvDiscovered{DrvPath: path}}}))
		attrs = append(attrs, &eventsv1.JobAttr{Attr: fmt.Sprintf("pkgs.p%d", i), DrvId: ids[i], DrvPath: path, Difference: eventsv1.Difference_DIFFERENCE_NEW})
	}
	recs = append(recs, eventlog.Record{Seq: uint64(len(recs) + 1), Aggregate: eventlog.Jobset, ID: jobset, Fact: "evaluated",
		Event: &eventsv1.Event{Id: "ev", Payload: &eventsv1.Event_JobsetEvaluated{JobsetEvaluated: &eventsv1.JobsetEvaluated{ChangeId: "change", Attrs: attrs}}}})
	for _, id := range ids {
		recs = append(recs, drvRec(uint64(len(recs)+1), id, &eventsv1.Event{Payload: &eventsv1.Event_DrvBuildSucceeded{DrvBuildSucceeded: &eventsv1.DrvBuildSucceeded{Cached: true}}}))
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		db, c := freshModel(b)
		b.StartTimer()
		concluded := 0
		for start := 0; start < len(recs); start += batch {
			err := db.Update(func(tx *bolt.Tx) error {
				out := &projection.Decisions{}
				for _, rec := range recs[start:min(start+batch, len(recs))] {
					if err := c.Apply(tx, rec, out); err != nil {
						return err
					}
				}
				concluded += out.Len()
				return c.Flush(tx)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if concluded != 1 {
			b.Fatalf("%d decisions, want the jobset's conclusion", concluded)
		}
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/settle")
}

// freshModel opens an empty recorder.db with the model's buckets made.
func freshModel(b *testing.B) (*bolt.DB, *Conclusions) {
	b.Helper()
	db := projectiontest.OpenDB(b, "recorder.db")
	c := NewConclusions(zerolog.Nop())
	if err := db.Update(c.Init); err != nil {
		b.Fatal(err)
	}
	return db, c
}
