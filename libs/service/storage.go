package service

import (
	"flag"
	"fmt"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// StorageFlags size ekaci's streams. Every binary that provisions them
// (each stage binary and the all-in-one) takes the same flags; set them
// through the same EKACI_* variables everywhere, or the last stage to
// start decides.
type StorageFlags struct {
	eventsMiB, logsMiB, workMiB, linesPerAttempt int64
}

// AddStorageFlags defines --events-max-mib, --logs-max-mib, --work-max-mib
// and --log-lines-per-attempt on fs.
func AddStorageFlags(fs *flag.FlagSet) *StorageFlags {
	f := &StorageFlags{}
	fs.Int64Var(&f.eventsMiB, "events-max-mib", eventlog.DefaultEventsMaxBytes>>20, "byte budget of the event log (EKACI_EVENTS), in MiB, reserved on the NATS server; a full log refuses appends, and a warning is logged from 80 %")
	fs.Int64Var(&f.logsMiB, "logs-max-mib", eventlog.DefaultLogsMaxBytes>>20, "byte budget of live build-log lines (EKACI_LOGS), in MiB; the oldest lines go first")
	fs.Int64Var(&f.workMiB, "work-max-mib", eventlog.DefaultWorkMaxBytes>>20, "byte budget of waiting builds and reports (EKACI_WORK), in MiB; a full queue refuses new work")
	fs.Int64Var(&f.linesPerAttempt, "log-lines-per-attempt", eventlog.DefaultLogLinesPerAttempt, "live log lines kept per build attempt (the full log is in the builder's file)")
	return f
}

// Streams returns o with the flags' budgets, or an error naming a flag
// that is not a positive number.
func (f *StorageFlags) Streams(o eventlog.StreamOptions) (eventlog.StreamOptions, error) {
	for _, v := range []struct {
		name string
		n    int64
	}{{"events-max-mib", f.eventsMiB}, {"logs-max-mib", f.logsMiB}, {"work-max-mib", f.workMiB}, {"log-lines-per-attempt", f.linesPerAttempt}} {
		if v.n <= 0 {
			return o, fmt.Errorf("--%s %d: want a positive number", v.name, v.n)
		}
	}
	o.EventsMaxBytes, o.LogsMaxBytes, o.WorkMaxBytes = f.eventsMiB<<20, f.logsMiB<<20, f.workMiB<<20
	o.LogLinesPerAttempt = f.linesPerAttempt
	return o, nil
}
