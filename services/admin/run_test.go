package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/eventlog/eventlogtest"
	adminv1 "github.com/ekaci/ekaci/libs/gen/ekaci/admin/v1"
	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
	"github.com/ekaci/ekaci/libs/natstest"
	"github.com/ekaci/ekaci/libs/projection"
	"github.com/ekaci/ekaci/services/admin"
)

// serve runs the stage over a fresh event log with cfg's listeners and
// returns where it listens.
func serve(t *testing.T, cfg admin.Config) (admin.Listening, *eventlog.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	log := eventlog.New(eventlogtest.JetStream(t, ctx))
	cfg.Events, cfg.DataDir, cfg.Logger = log, t.TempDir(), zerolog.Nop()
	ready := make(chan admin.Listening, 1)
	cfg.Ready = func(l admin.Listening) { ready <- l }
	done := make(chan error, 1)
	go func() { done <- admin.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case l := <-ready:
		return l, log
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not listening after 30 s")
	}
	return admin.Listening{}, nil
}

func dial(t *testing.T, target string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestAuthRules: without a token configured, TCP allows open reads only
// (PermissionDenied otherwise); with one, a missing or wrong token is
// Unauthenticated; the unix socket needs none and is mode 0600.
func TestAuthRules(t *testing.T) {
	ctx := context.Background()
	read := func(c adminv1.AdminClient, ctx context.Context) error {
		_, err := c.ListChanges(ctx, &adminv1.ListChangesRequest{})
		return err
	}
	act := func(c adminv1.AdminClient, ctx context.Context) error {
		_, err := c.Retry(ctx, &adminv1.RetryRequest{DrvId: "0000000000000000000000000000000x"})
		return err
	}
	tok := func(s string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s)
	}
	tests := []struct {
		name string
		cfg  admin.Config
		unix bool
		call func(adminv1.AdminClient, context.Context) error
		ctx  context.Context
		want codes.Code
	}{
		{"no token, open reads, read", admin.Config{OpenReads: true}, false, read, ctx, codes.OK},
		{"no token, open reads, act", admin.Config{OpenReads: true}, false, act, ctx, codes.PermissionDenied},
		{"no token, closed reads, read", admin.Config{}, false, read, ctx, codes.PermissionDenied},
		{"token, act without it", admin.Config{Token: "t"}, false, act, ctx, codes.Unauthenticated},
		{"token, act with it", admin.Config{Token: "t"}, false, act, tok("t"), codes.NotFound},
		{"token, open reads, read without it", admin.Config{Token: "t", OpenReads: true}, false, read, ctx, codes.OK},
		{"unix, act without a token", admin.Config{Token: "t"}, true, act, ctx, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Addr = "127.0.0.1:0"
			cfg.Socket = filepath.Join(t.TempDir(), "a.sock")
			l, _ := serve(t, cfg)
			target := l.Addr
			if tt.unix {
				target = "unix://" + l.Socket
				fi, err := os.Stat(l.Socket)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
				}
			}
			err := tt.call(adminv1.NewAdminClient(dial(t, target, insecure.NewCredentials())), tt.ctx)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

// TestTLS: with a certificate, TCP speaks TLS only; the health service
// answers over it.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, b := range map[string][]byte{cert: certPEM, key: keyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := serve(t, admin.Config{Addr: "127.0.0.1:0", TLSCert: cert, TLSKey: key})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc, err := healthpb.NewHealthClient(dial(t, l.Addr, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"}))).
		Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over TLS = %v, %v", hc, err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if _, err := healthpb.NewHealthClient(dial(t, l.Addr, insecure.NewCredentials())).Check(pctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a plaintext client was answered on the TLS port")
	}
}

// TestBadConfigurations: what cannot work is refused, naming the flag.
func TestBadConfigurations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  admin.Config
	}{
		{"nothing to listen on", admin.Config{}},
		{"cert without key", admin.Config{Addr: ":0", TLSCert: "c"}},
		{"TLS without TCP", admin.Config{Socket: "s", TLSCert: "c", TLSKey: "k"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Check(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("socket path is a regular file", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := admin.Run(ctx, admin.Config{Events: eventlog.New(eventlogtest.JetStream(t, ctx)), DataDir: t.TempDir(), Socket: file, Logger: zerolog.Nop()})
		if err == nil {
			t.Fatal("listened over a regular file")
		}
	})
}

// TestUnavailableWithoutNATS: an action while NATS is gone is Unavailable.
func TestUnavailableWithoutNATS(t *testing.T) {
	srv := natstest.NewServer(t)
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := eventlog.Provision(ctx, js, eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	log := eventlog.New(js)
	sock := filepath.Join(t.TempDir(), "a.sock")
	ready := make(chan admin.Listening, 1)
	done := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	go func() {
		done <- admin.Run(rctx, admin.Config{Events: log, DataDir: t.TempDir(), Socket: sock, Logger: zerolog.Nop(), Ready: func(l admin.Listening) { ready <- l }})
	}()
	<-ready
	srv.Shutdown() // the connection lives on, reconnecting
	c := adminv1.NewAdminClient(dial(t, "unix://"+sock, insecure.NewCredentials()))
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	_, err := c.CancelChange(cctx, &adminv1.CancelChangeRequest{Id: "c"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("cancel with NATS gone: %v, want Unavailable", err)
	}
	// The server itself still answers: reads from its model go on.
	if _, err := c.ListChanges(cctx, &adminv1.ListChangesRequest{}); err != nil {
		t.Fatalf("a read with NATS gone: %v", err)
	}
	_ = nc
	stop()
	<-done // the read model's runner ends with the connection's error
	_ = eventsv1.Conclusion_CONCLUSION_CANCELLED
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestApprovalCodes: approve and revoke answer InvalidArgument naming the
// login field, NotFound for an approval never recorded, Unauthenticated
// over TCP without the token; ListApprovals given an approval's sequence
// shows it.
func TestApprovalCodes(t *testing.T) {
	l, _ := serve(t, admin.Config{Addr: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "a.sock"), Token: "t"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unix := adminv1.NewAdminClient(dial(t, "unix://"+l.Socket, insecure.NewCredentials()))
	tcp := adminv1.NewAdminClient(dial(t, l.Addr, insecure.NewCredentials()))

	_, err := unix.ApproveContributor(ctx, &adminv1.ApproveContributorRequest{Login: "not a login"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || badField(st) != "login" {
		t.Fatalf("approve a bad login: %v (field %q), want InvalidArgument on login", err, badField(st))
	}
	if _, err := unix.RevokeContributor(ctx, &adminv1.RevokeContributorRequest{Login: "octocat"}); status.Code(err) != codes.NotFound {
		t.Fatalf("revoke what was never approved: %v, want NotFound", err)
	}
	if _, err := tcp.ApproveContributor(ctx, &adminv1.ApproveContributorRequest{Login: "octocat"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("approve over TCP without the token: %v, want Unauthenticated", err)
	}
	resp, err := tcp.ApproveContributor(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer t", admin.ActorHeader, "dana"),
		&adminv1.ApproveContributorRequest{Login: "octocat", Reason: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := unix.ListApprovals(ctx, &adminv1.ListApprovalsRequest{AfterSeq: resp.GetAction().GetSeq()})
	if err != nil {
		t.Fatal(err)
	}
	if a := list.GetApprovals(); len(a) != 1 || a[0].GetLogin() != "octocat" || !a[0].GetApproved() || a[0].GetActor().GetWho() != "token:dana" || a[0].GetSeq() != resp.GetAction().GetSeq() {
		t.Fatalf("approvals = %v, want octocat approved by token:dana", a)
	}
}

// TestDrainCodes: drain answers InvalidArgument on name for an empty
// one, NotFound for a name no builder lives under; resume of a builder not
// drained is FailedPrecondition; over TCP both need the token.
func TestDrainCodes(t *testing.T) {
	l, _ := serve(t, admin.Config{Addr: "127.0.0.1:0", Socket: filepath.Join(t.TempDir(), "a.sock"), Token: "t"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unix := adminv1.NewAdminClient(dial(t, "unix://"+l.Socket, insecure.NewCredentials()))
	tcp := adminv1.NewAdminClient(dial(t, l.Addr, insecure.NewCredentials()))
	_, err := unix.DrainBuilder(ctx, &adminv1.DrainBuilderRequest{})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || badField(st) != "name" {
		t.Fatalf("drain without a name: %v (field %q), want InvalidArgument on name", err, badField(st))
	}
	for _, tt := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"drain an unknown builder", func() error {
			_, err := unix.DrainBuilder(ctx, &adminv1.DrainBuilderRequest{Name: "nosuch"})
			return err
		}, codes.NotFound},
		{"resume a builder not drained", func() error {
			_, err := unix.ResumeBuilder(ctx, &adminv1.ResumeBuilderRequest{Name: "nosuch"})
			return err
		}, codes.FailedPrecondition},
		{"drain over TCP without the token", func() error {
			_, err := tcp.DrainBuilder(ctx, &adminv1.DrainBuilderRequest{Name: "nosuch"})
			return err
		}, codes.Unauthenticated},
		{"resume over TCP without the token", func() error {
			_, err := tcp.ResumeBuilder(ctx, &adminv1.ResumeBuilderRequest{Name: "nosuch"})
			return err
		}, codes.Unauthenticated},
	} {
		if got := status.Code(tt.call()); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRebuildOnAFeed: with the model on a shared event feed (as in the
// all-in-one), rebuilt models keep folding new facts, twice over (the
// second rebuild replaces a rebuilt model), and a read given an action's
// sequence sees it.
func TestRebuildOnAFeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := eventlogtest.JetStream(t, ctx)
	log := eventlog.New(js)
	sock := filepath.Join(t.TempDir(), "a.sock")
	ready := make(chan admin.Listening, 1)
	done := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	go func() {
		done <- admin.Run(rctx, admin.Config{Events: log, DataDir: t.TempDir(), Socket: sock, Logger: zerolog.Nop(),
			Feed: projection.NewFeed(log, zerolog.Nop(), admin.ReadModel), Ready: func(l admin.Listening) { ready <- l }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-ready
	c := adminv1.NewAdminClient(dial(t, "unix://"+sock, insecure.NewCredentials()))
	var want []string
	for _, login := range []string{"before", "between", "after"} {
		resp, err := c.ApproveContributor(ctx, &adminv1.ApproveContributorRequest{Login: login})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, login)
		list, err := c.ListApprovals(ctx, &adminv1.ListApprovalsRequest{AfterSeq: resp.GetAction().GetSeq()})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range list.GetApprovals() {
			got = append(got, a.GetLogin())
		}
		if !slices.Equal(got, slices.Sorted(slices.Values(want))) { // listed by login
			t.Fatalf("approvals after %s: %v, want %v", login, got, want)
		}
		if login == "after" {
			break
		}
		rb, err := c.RebuildReadModel(ctx, &adminv1.RebuildReadModelRequest{Name: admin.ReadModel})
		if err != nil || rb.GetPosition() < resp.GetAction().GetSeq() || rb.GetRows() != uint64(len(want)) {
			t.Fatalf("rebuild after %s: %v, %v; want it past %d with %d rows", login, rb, err, resp.GetAction().GetSeq(), len(want))
		}
	}
}

// badField is the field an InvalidArgument's BadRequest detail names.
func badField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}
