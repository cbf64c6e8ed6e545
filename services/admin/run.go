package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/ekaci/ekaci/libs/eventlog"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	"github.com/ekaci/ekaci/libs/projection"
)

// Config wires the stage.
type Config struct {
	Events  *eventlog.Log
	DataDir string // the read model lives in DataDir/admin.db
	// LogDir is where the builders keep their logs (empty: logs are read
	// from the stream only).
	LogDir string
	Logger zerolog.Logger
	// Feed, when set, is the event feed this process's read models share.
	Feed *projection.Feed

	// Socket is the unix socket's path (mode 0600; empty: none).
	Socket string
	// Addr is the TCP address (empty: none), e.g. 127.0.0.1:7070.
	Addr string
	// Token is the bearer token calls over TCP need (empty: over TCP only
	// open reads are allowed).
	Token string
	// OpenReads lets reads over TCP go without the token.
	OpenReads bool
	// TLSCert and TLSKey are PEM files: TCP then speaks TLS.
	TLSCert, TLSKey string
	// HTTPAddr serves GET /logs/... (empty: off).
	HTTPAddr string
	// Approved are the webhook's --github-approved logins, shown by
	// ListApprovals as configured (the webhook approves them whatever the
	// facts say); empty when this server was not told them.
	Approved []string
	// Ready, when set, is told the addresses listened on, once they are.
	Ready func(Listening)
}

// Listening says where the stage listens (ports resolved).
type Listening struct {
	Socket, Addr, HTTPAddr string
}

// Check refuses a configuration that cannot work, naming the flag.
func (c Config) Check() error {
	switch {
	case c.Socket == "" && c.Addr == "":
		return errors.New("admin: neither --admin-socket nor --admin-addr: nothing to listen on")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("admin: --admin-tls-cert and --admin-tls-key go together")
	case c.TLSCert != "" && c.Addr == "":
		return errors.New("admin: --admin-tls-cert without --admin-addr: TLS is for TCP")
	}
	return nil
}

// Run folds the admin read model and serves the API until ctx ends, then
// stops the servers gracefully (a follow still streaming is cut after 5 s).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	var creds credentials.TransportCredentials
	if cfg.TLSCert != "" {
		c, err := credentials.NewServerTLSFromFile(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("admin: TLS certificate %s, key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		creds = c
	}
	db, err := projection.Open(filepath.Join(cfg.DataDir, modelFile))
	if err != nil {
		return err
	}
	defer db.Close()
	opts := []projection.Option{projection.WithLogger(cfg.Logger)}
	if cfg.Feed != nil {
		opts = append(opts, projection.WithFeed(cfg.Feed))
	}
	runner, err := projection.New(db, cfg.Events, NewModel(cfg.Logger), opts...)
	if err != nil {
		return err
	}
	reads := NewReads(db)
	logs := &Logs{Dir: cfg.LogDir, JS: cfg.Events.JetStream(), Reads: reads}
	g, gctx := errgroup.WithContext(ctx)
	models := newHost(gctx, g, cfg.Events, cfg.DataDir, cfg.Logger, reads, runner, db)
	defer models.close()
	srv := &server{reads: reads, logs: logs, log: cfg.Events, js: cfg.Events.JetStream(), runner: models, models: models, approved: cfg.Approved, wait: 30 * time.Second}

	var lis Listening
	var unixL, tcpL, httpL net.Listener
	defer func() {
		for _, l := range []net.Listener{unixL, tcpL, httpL} {
			if l != nil {
				l.Close()
			}
		}
	}()
	if cfg.Socket != "" {
		if unixL, err = listenUnix(cfg.Socket); err != nil {
			return err
		}
		lis.Socket = cfg.Socket
	}
	if cfg.Addr != "" {
		if tcpL, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("admin: listen on --admin-addr %s: %w", cfg.Addr, err)
		}
		lis.Addr = tcpL.Addr().String()
	}
	if cfg.HTTPAddr != "" {
		if httpL, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("admin: listen on --logs-addr %s: %w", cfg.HTTPAddr, err)
		}
		lis.HTTPAddr = httpL.Addr().String()
	}

	hs := health.NewServer()
	a := auth{token: cfg.Token, openReads: cfg.OpenReads}
	newServer := func(extra ...grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream)}, extra...)...)
		adminv1.RegisterAdminServer(s, srv)
		healthpb.RegisterHealthServer(s, hs)
		reflection.Register(s)
		return s
	}
	var servers []*grpc.Server
	g.Go(func() error { return runner.Run(gctx) })
	serve := func(s *grpc.Server, l net.Listener) {
		servers = append(servers, s)
		g.Go(func() error {
			if err := s.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("admin: serve %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	if unixL != nil {
		serve(newServer(), unixL)
	}
	if tcpL != nil {
		var extra []grpc.ServerOption
		if creds != nil {
			extra = append(extra, grpc.Creds(creds))
		}
		serve(newServer(extra...), tcpL)
	}
	var hsrv *http.Server
	if httpL != nil {
		hsrv = &http.Server{Handler: LogHandler(logs, cfg.Logger), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
		g.Go(func() error {
			if err := hsrv.Serve(httpL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin: serve logs on %s: %w", httpL.Addr(), err)
			}
			return nil
		})
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(adminv1.Admin_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	cfg.Logger.Info().Str("socket", lis.Socket).Str("addr", lis.Addr).Str("logs", lis.HTTPAddr).Msg("admin API listening")
	if cfg.Ready != nil {
		cfg.Ready(lis)
	}
	g.Go(func() error {
		<-gctx.Done()
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() {
			for _, s := range servers {
				s.GracefulStop()
			}
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			for _, s := range servers {
				s.Stop()
			}
			<-stopped
		}
		if hsrv != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = hsrv.Shutdown(sctx)
			hsrv.Close()
		}
		return nil
	})
	err = g.Wait()
	if cfg.Socket != "" {
		os.Remove(cfg.Socket)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// listenUnix listens on a unix socket only its owner may open: a stale
// socket left by a killed process is replaced, any other file is not.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: --admin-socket %s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: --admin-socket %s: another server listens on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: remove stale socket %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin: socket dir: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on --admin-socket %s: %w", path, err)
	}
	// Before anyone is told the path: only the owner may connect.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: chmod socket %s: %w", path, err)
	}
	return l, nil
}
