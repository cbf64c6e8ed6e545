package natsembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// DefaultPort is the client port when Config.Port is 0: NATS's own default,
// so `nats` CLI users reach the all-in-one without flags.
const DefaultPort = 4222

// DefaultMaxStore is Config.MaxStore's default: ekaci's default stream
// budgets (21 GiB) and headroom.
const DefaultMaxStore = 32 << 30

// RandomPort as Config.Port or Config.HTTPPort asks for a free port chosen
// at start; ClientURL and MonitorURL then report it.
const RandomPort = -1

// Config says where and how the embedded server runs.
type Config struct {
	// DataDir holds the server's state: the JetStream store goes to
	// DataDir/jetstream (nats-server appends "jetstream" itself) and the
	// lock file to DataDir/nats.lock. Required.
	DataDir string
	// Host is the interface to listen on; default 127.0.0.1, so the
	// all-in-one is not reachable from the network unless asked.
	Host string
	// Port is the client port: 0 means DefaultPort (4222), RandomPort (-1)
	// a free one.
	Port int
	// HTTPPort is the monitoring port (/varz, /jsz, ...): 0 is off,
	// RandomPort a free one.
	HTTPPort int
	// SyncAlways fsyncs the store before every acknowledgement
	// (`sync_interval: always`). Off by default: see the package comment
	// for what that risks.
	SyncAlways bool
	// MaxStore is JetStream's file store limit in bytes (0:
	// DefaultMaxStore). Streams reserve their byte budgets against it, so
	// it must hold them all (eventlog.StreamOptions.Reserved), and it must
	// be set explicitly: nats-server's own default is 75 % of the disk
	// free at start, which makes whether the budgets fit depend on the
	// day. It is a limit, not an allocation: the disk must have the room.
	MaxStore int64
	// Logger receives nats-server's log lines. Its level decides whether
	// nats-server's debug and trace lines are produced at all.
	Logger zerolog.Logger
	// StartTimeout bounds the wait for the server to be ready, which
	// includes recovering a large store; 0 means one minute.
	StartTimeout time.Duration
}

// Server is a running embedded nats-server.
type Server struct {
	ns     *server.Server
	host   string // as configured
	unlock func()

	once sync.Once
	done chan struct{} // closed when the server has stopped and the lock is released
}

// Start checks the data dir and ports, locks the store, starts the server
// and returns once it accepts connections with JetStream enabled.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: no data dir given (set --data-dir or EKACI_DATA_DIR)", ErrDataDir)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDataDir, cfg.DataDir, err)
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	if cfg.MaxStore <= 0 {
		cfg.MaxStore = DefaultMaxStore
	}
	if err := checkWritable(dir); err != nil {
		return nil, err
	}
	unlock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	// Checked after the lock: a second ekaci on the same store and port
	// learns about the store, the more useful of the two errors.
	if err := checkPort(cfg.Host, cfg.Port, "client port",
		"choose another with --nats-port or EKACI_NATS_PORT, or -1 for a free one"); err != nil {
		unlock()
		return nil, err
	}
	if err := checkPort(cfg.Host, cfg.HTTPPort, "monitoring port",
		"choose another monitoring port, or 0 to turn monitoring off"); err != nil {
		unlock()
		return nil, err
	}

	opts := &server.Options{
		ServerName: "ekaci-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		HTTPHost:   cfg.Host,
		HTTPPort:   cfg.HTTPPort,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: cfg.SyncAlways,
		// Explicit, so that the streams' reserved budgets fit or not
		// whatever the disk's free space at start.
		JetStreamMaxStore: cfg.MaxStore,
		// A failure deep in a nixpkgs-sized graph is one downstream_failed
		// fact listing ~100,000 derivations (~3.5 MB); one node has no
		// routes or Raft peers for a large message to stall.
		MaxPayload: 8 << 20,
		// The embedding process owns signals (SIGTERM drains ekaci's
		// stages first, then shuts the server down).
		NoSigs: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	zl := newZlog(cfg.Logger)
	lvl := cfg.Logger.GetLevel()
	ns.SetLoggerV2(zl, lvl <= zerolog.DebugLevel, lvl <= zerolog.TraceLevel, false)

	go ns.Start()
	if err := waitReady(ns, zl, cfg); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		unlock()
		return nil, err
	}
	return &Server{ns: ns, host: cfg.Host, unlock: unlock, done: make(chan struct{})}, nil
}

// waitReady waits for ns to listen with JetStream enabled, for nats-server
// to report a fatal error, or for the timeout.
func waitReady(ns *server.Server, zl *zlog, cfg Config) error {
	deadline := time.Now().Add(cfg.StartTimeout)
	for {
		select {
		case msg := <-zl.fatal:
			return fatalError(msg, cfg)
		default:
		}
		if ns.ReadyForConnections(50*time.Millisecond) && ns.JetStreamEnabled() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: not ready for connections with JetStream within %v (a large store may need a longer start timeout)", ErrStart, cfg.StartTimeout)
		}
	}
}

// fatalError turns nats-server's fatal log line into an error. Ports are
// checked before starting, so a port error here lost a race with another
// process that took the port in between.
func fatalError(msg string, cfg Config) error {
	if strings.Contains(msg, "address already in use") {
		switch {
		case strings.HasPrefix(msg, "Error listening on port"):
			return fmt.Errorf("%w: nats client port %d on %s is taken by another process (choose another with --nats-port or EKACI_NATS_PORT, or -1 for a free one): %s", ErrPortInUse, cfg.Port, cfg.Host, msg)
		case strings.HasPrefix(msg, "Can't start monitoring"):
			return fmt.Errorf("%w: nats monitoring port %d on %s is taken by another process (choose another monitoring port, or 0 to turn monitoring off): %s", ErrPortInUse, cfg.HTTPPort, cfg.Host, msg)
		}
	}
	return fmt.Errorf("%w: %s", ErrStart, msg)
}

// checkWritable makes dir/jetstream and proves a file can be created there.
// nats-server checks this too, but answers "storage directory is not
// writable" without naming the directory or the fix.
func checkWritable(dir string) error {
	js := filepath.Join(dir, server.JetStreamStoreDir)
	if err := os.MkdirAll(js, 0o750); err != nil {
		return fmt.Errorf("%w: cannot create %s: %w (make %s a directory the user running ekaci can write, or choose another with --data-dir or EKACI_DATA_DIR)", ErrDataDir, js, err, dir)
	}
	probe, err := os.CreateTemp(js, ".write-check-*")
	if err != nil {
		return fmt.Errorf("%w: %s is not writable: %w (chown it to the user running ekaci, or choose another with --data-dir or EKACI_DATA_DIR)", ErrDataDir, js, err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return fmt.Errorf("%w: %s: remove write check: %w", ErrDataDir, js, err)
	}
	return nil
}

// lockStore takes an exclusive, non-blocking flock on dir/nats.lock and
// writes this process's pid into it for the error another process prints.
// The kernel drops the lock when the process dies, so a crash leaves no
// stale lock behind.
func lockStore(dir string) (func(), error) {
	path := filepath.Join(dir, "nats.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("%w: open lock %s: %w", ErrDataDir, path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		pid := strings.TrimSpace(string(holder))
		if pid == "" {
			pid = "unknown"
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: the JetStream store in %s is used by another process (pid %s); stop it, or give this one another --data-dir", ErrStoreLocked, dir, pid)
		}
		return nil, fmt.Errorf("%w: lock %s: %w", ErrDataDir, path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// checkPort fails when port on host cannot be listened on. nats-server only
// logs a fatal line in that case; checking first gives an error that names
// the port and the fix. Port 0 or RandomPort needs no check.
func checkPort(host string, port int, what, fix string) error {
	if port <= 0 {
		return nil
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: nats %s %d on %s is taken by another process (%s)", ErrPortInUse, what, port, host, fix)
		}
		return fmt.Errorf("%w: cannot listen on %s for the nats %s: %w", ErrStart, addr, what, err)
	}
	return l.Close()
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:4222. A
// wildcard listen host (0.0.0.0, ::) is reported as loopback, which is
// reachable from this machine.
func (s *Server) ClientURL() string {
	return s.url(s.ns.Addr())
}

// MonitorURL is the monitoring endpoint's base URL
// (http://127.0.0.1:8222), or "" when monitoring is off.
func (s *Server) MonitorURL() string {
	a := s.ns.MonitorAddr()
	if a == nil {
		return ""
	}
	return strings.Replace(s.url(a), "nats://", "http://", 1)
}

func (s *Server) url(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip := tcp.IP
	if ip.IsUnspecified() {
		// Go reports a listener on 0.0.0.0 as [::]: the configured host
		// says which loopback fits.
		ip = net.IPv4(127, 0, 0, 1)
		if strings.Contains(s.host, ":") {
			ip = net.IPv6loopback
		}
	}
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))}
	return u.String()
}

// Shutdown stops the server gracefully (closing clients, flushing and
// closing the store) and waits for it, then releases the store lock. If ctx
// ends first it returns ctx's error; the shutdown continues and the lock is
// released when it completes. Calling it again waits for the same shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		go func() {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
			s.unlock()
			close(s.done)
		}()
	})
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats shutdown: %w", ctx.Err())
	}
}
