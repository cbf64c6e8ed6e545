// Package service gives every ekaci binary the same start: a data dir it
// can write and lock, a NATS connection (embedded or external) with the
// streams provisioned, and clear one-line errors when any of that fails.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/eventlog"
)

// ErrDataDir means the data dir cannot be used.
var ErrDataDir = errors.New("data dir unusable")

// ErrInUse means another ekaci process holds the data dir.
var ErrInUse = errors.New("data dir in use")

// DefaultDataDir is where state lives when no --data-dir is given:
// /var/lib/ekaci for root, else $XDG_STATE_HOME/ekaci or ~/.local/state/ekaci.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ekaci"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ekaci")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "ekaci")
	}
	return filepath.Join(os.TempDir(), "ekaci")
}

// Lock makes dir (if needed), checks it is writable, and takes an
// exclusive lock on dir/ekaci.lock for this process's lifetime. The
// returned func releases it.
func Lock(dir string) (func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDataDir, dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("%w: cannot create %s: %w (choose another with --data-dir or EKACI_DATA_DIR)", ErrDataDir, abs, err)
	}
	probe, err := os.CreateTemp(abs, ".write-check-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not writable: %w (fix its permissions or choose another with --data-dir)", ErrDataDir, abs, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	path := filepath.Join(abs, "ekaci.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDataDir, path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("%w: %s is used by another ekaci (pid %s); stop it or choose another --data-dir", ErrInUse, abs, strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// ConnectOption adjusts Connect.
type ConnectOption func(*connectConfig)

type connectConfig struct{ ackTimeout time.Duration }

// WithAckTimeout sets how long an asynchronous publish on the returned
// handle waits for its acknowledgement before failing with
// jetstream.ErrAsyncPublishTimeout (default eventlog.DefaultAckTimeout).
func WithAckTimeout(d time.Duration) ConnectOption {
	return func(c *connectConfig) { c.ackTimeout = d }
}

// PingInterval is how often a stage's connection pings its server; two
// unanswered pings and the third interval mark it dead and it reconnects
// to another.
const PingInterval = 3 * time.Second

// Connect dials NATS and provisions ekaci's streams. The JetStream handle
// times out asynchronous publishes (see WithAckTimeout): without it
// nats.go waits forever for an acknowledgement lost on the way.
func Connect(ctx context.Context, url, name string, streams eventlog.StreamOptions, opts ...ConnectOption) (*nats.Conn, jetstream.JetStream, error) {
	cc := connectConfig{ackTimeout: eventlog.DefaultAckTimeout}
	for _, o := range opts {
		o(&cc)
	}
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// A server that is paused or cut off by a partition sends no
		// reset: only missed pings tell. nats.go's default (every 2 min,
		// 2 missed) notices after 4-6 min; this, within PingInterval x
		// (MaxPingsOutstanding+1), about 9 s.
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(2),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w (check --nats-url / EKACI_NATS_URL)", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cc.ackTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", url, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := eventlog.Provision(pctx, js, streams); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%w (is JetStream enabled on %s?)", err, url)
	}
	return nc, js, nil
}

// ConnectRetrying is Connect, tried again until it succeeds, ctx ends or
// within has passed: a stage started before the NATS cluster is up, or
// while it has no meta leader (an election takes 4-13 s), waits for it
// instead of exiting. Each attempt gets at most 30 s; every failure is
// logged with what went wrong, and the last one is returned.
func ConnectRetrying(ctx context.Context, url, name string, streams eventlog.StreamOptions, within time.Duration, log zerolog.Logger, opts ...ConnectOption) (*nats.Conn, jetstream.JetStream, error) {
	deadline := time.Now().Add(within)
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nc, js, err := Connect(ctx, url, name, streams, opts...)
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempt", attempt).Msg("NATS reached, streams provisioned")
			}
			return nc, js, nil
		}
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return nil, nil, err
		}
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("NATS not ready; trying again")
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// CurrentSystem is this machine's Nix system, e.g. x86_64-linux.
func CurrentSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}
