package natsembed

import (
	"fmt"

	"github.com/rs/zerolog"
)

// zlog routes nats-server's log lines through zerolog. nats-server calls
// Fatalf when it cannot start (a port taken, JetStream refusing its store)
// and then simply returns from Start: zerolog's Fatal would exit the whole
// process, so fatal lines are logged at error level and handed to Start,
// which turns the first one into its error.
type zlog struct {
	log   zerolog.Logger
	fatal chan string // buffered 1: the first fatal message
}

func newZlog(l zerolog.Logger) *zlog {
	return &zlog{log: l, fatal: make(chan string, 1)}
}

func (z *zlog) Noticef(format string, v ...any) { z.log.Info().Msgf(format, v...) }
func (z *zlog) Warnf(format string, v ...any)   { z.log.Warn().Msgf(format, v...) }
func (z *zlog) Errorf(format string, v ...any)  { z.log.Error().Msgf(format, v...) }
func (z *zlog) Debugf(format string, v ...any)  { z.log.Debug().Msgf(format, v...) }
func (z *zlog) Tracef(format string, v ...any)  { z.log.Trace().Msgf(format, v...) }

func (z *zlog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	z.log.Error().Bool("fatal", true).Msg(msg)
	select {
	case z.fatal <- msg:
	default: // keep the first: later ones are consequences
	}
}
