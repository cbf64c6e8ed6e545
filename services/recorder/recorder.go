package recorder

import (
	"context"
	"path/filepath"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/worker"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/libs/telemetry"
)

// Config wires the stage.
type Config struct {
	Events  *eventlog.Log
	DataDir string // the read model lives in DataDir/recorder.db
	Logger  zerolog.Logger
	// Feed, when set, is the event feed this process's read models share
	// (the all-in-one); nil: a consumer of its own.
	Feed *projection.Feed
	// Metrics, when set, counts the reports the recorder gave up on.
	Metrics *telemetry.Metrics
}

// Run records reports and concludes jobsets until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	db, err := projection.Open(filepath.Join(cfg.DataDir, "recorder.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	// Half the largest message the server takes, for the event's other
	// fields and headers.
	budget := int(cfg.Events.JetStream().Conn().MaxPayload() / 2)
	opts := []projection.Option{projection.WithLogger(cfg.Logger)}
	if cfg.Feed != nil {
		opts = append(opts, projection.WithFeed(cfg.Feed))
	}
	runner, err := projection.New(db, cfg.Events, NewConclusions(cfg.Logger).WithResultBudget(budget), opts...)
	if err != nil {
		return err
	}
	rep := &reports{log: cfg.Events, logger: cfg.Logger}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runner.Run(ctx) })
	g.Go(func() error {
		return worker.RunBatch(ctx, cfg.Events.JetStream(), worker.Config{
			Stream: eventlog.WorkStream, Durable: eventlog.RecorderReportsDurable, Filters: []string{eventlog.ReportsFilter},
			// A report given up on ends its attempt as an infrastructure
			// interruption, lest the derivation stay Building.
			GiveUp: rep.giveUp, GaveUp: cfg.Metrics.CountGiveUp,
		}, rep.handle, cfg.Logger)
	})
	return g.Wait()
}
