package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// shutdownGrace bounds how long Serve waits for in-flight requests (a
// scrape, a probe) once its context ends.
const shutdownGrace = 5 * time.Second

// Handler serves:
//
//	/metrics  m's registry in the Prometheus exposition formats
//	/healthz  200 "ok" while the process runs (liveness)
//	/readyz   200 when every component in h is ready, else 503 listing
//	          the components that are not, with why (readiness)
//
// A nil h is always ready.
func Handler(m *Metrics, h *Health, log zerolog.Logger) http.Handler {
	if h == nil {
		h = &Health{}
	}
	reg := m.Registry()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if bad := h.NotReady(); len(bad) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(bad, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx ends, then shuts the
// server down gracefully; it returns nil after a clean shutdown and an
// error if it cannot listen or serving fails.
func Serve(ctx context.Context, addr string, m *Metrics, h *Health, log zerolog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry listen %s: %w", addr, err)
	}
	return ServeListener(ctx, l, m, h, log)
}

// ServeListener is Serve on a listener the caller opened (for example on
// 127.0.0.1:0, to learn the port first). It closes l.
func ServeListener(ctx context.Context, l net.Listener, m *Metrics, h *Health, log zerolog.Logger) error {
	srv := &http.Server{
		Handler:           Handler(m, h, log),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info().Str("addr", l.Addr().String()).Msg("serving metrics and health")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return fmt.Errorf("telemetry serve %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	// The grace period must outlive ctx, which has just ended.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("telemetry shutdown %s: %w", l.Addr(), err)
	}
	return nil
}

// promLogger sends promhttp's gathering errors to the process log.
type promLogger struct{ log zerolog.Logger }

func (p promLogger) Println(v ...any) {
	p.log.Warn().Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
