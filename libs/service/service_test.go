package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ekaci/ekaci/libs/eventlog"
	"github.com/ekaci/ekaci/libs/natstest"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another ekaci") {
		t.Fatalf("second lock: %v, want ErrInUse", err)
	}
	unlock()
	again, err := Lock(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()

	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(filepath.Join(file, "sub")); !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("lock under a file: %v, want ErrDataDir naming the flag", err)
	}
}

func TestMain_(t *testing.T) {
	srv := natstest.NewServer(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad flag", []string{"-nope"}, 2, "flag provided but not defined"},
		{"extra args", []string{"x"}, 2, "unexpected arguments"},
		{"bad log level", []string{"-log-level", "loud"}, 2, `"loud"`},
		{"unreachable", []string{"-nats-url", "nats://127.0.0.1:1", "-http-addr", "", "-connect-timeout", "0"}, 1, "cannot reach NATS at nats://127.0.0.1:1"},
		{"unreachable for longer", []string{"-nats-url", "nats://127.0.0.1:1", "-http-addr", "", "-connect-timeout", "2s"}, 1, "cannot reach NATS at nats://127.0.0.1:1"},
		{"no events budget", []string{"-events-max-mib", "0"}, 2, "--events-max-mib 0"},
		{"body fails", []string{"-nats-url", srv.ClientURL(), "-http-addr", ""}, 1, "stage broke"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			fs := flag.NewFlagSet("ekaci-test", flag.ContinueOnError)
			code := MainContext(context.Background(), fs, tt.args, &stderr, func(ctx context.Context, env Env) error {
				return errors.New("stage broke")
			})
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
	t.Run("runs and drains", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var stderr bytes.Buffer
		fs := flag.NewFlagSet("ekaci-test", flag.ContinueOnError)
		code := MainContext(ctx, fs, []string{"-nats-url", srv.ClientURL(), "-http-addr", "", "-log-format", "json"}, &stderr, func(ctx context.Context, env Env) error {
			// The streams are provisioned before the body runs.
			if _, err := env.Events.JetStream().Stream(ctx, eventlog.EventsStream); err != nil {
				return err
			}
			time.AfterFunc(50*time.Millisecond, cancel)
			<-ctx.Done()
			return ctx.Err()
		})
		if code != 0 {
			t.Fatalf("exit %d after cancellation: %s", code, stderr.String())
		}
	})
}

func TestSetMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	prevGC := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(prev); debug.SetGCPercent(prevGC) })
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	if got := SetMemoryLimit(300); got != 300<<20 || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Fatalf("limit %d, runtime %d; want %d", got, debug.SetMemoryLimit(-1), 300<<20)
	}
	if gc := debug.SetGCPercent(100); gc != GCPercentWithLimit {
		t.Fatalf("GOGC %d under a limit, want %d", gc, GCPercentWithLimit)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	if got := SetMemoryLimit(0); got != math.MaxInt64 {
		t.Fatalf("limit 0 set %d, want none", got)
	}
	t.Setenv("GOMEMLIMIT", "2GiB")
	debug.SetMemoryLimit(2 << 30)
	if got := SetMemoryLimit(300); got != 2<<30 {
		t.Fatalf("GOMEMLIMIT in the environment was overridden: %d", got)
	}
}

// TestConnectTimesOutLostAcks (review finding 12): the handle Connect
// returns fails an asynchronous publish whose acknowledgement never comes
// (here: a core subscriber takes the subject, no stream does) instead of
// waiting for it forever.
func TestConnectTimesOutLostAcks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := natstest.NewServer(t)
	sub, _ := natstest.Connect(t, srv)
	if _, err := sub.Subscribe("lost.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, js, err := Connect(ctx, srv.ClientURL(), "test", eventlog.StreamOptions{}, WithAckTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fut, err := js.PublishMsgAsync(&nats.Msg{Subject: "lost.x", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fut.Err():
		if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
			t.Fatalf("publish failed with %v, want ErrAsyncPublishTimeout", err)
		}
	case <-fut.Ok():
		t.Fatal("acknowledged by nobody")
	case <-time.After(10 * time.Second):
		t.Fatal("no timeout within 10 s for an acknowledgement that never comes")
	}
}

// A stage started before its NATS server waits for it: the body runs once
// the server is up, seconds later, and the wait was logged.
func TestMainWaitsForNATS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	ran := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		fs := flag.NewFlagSet("ekaci-test", flag.ContinueOnError)
		done <- MainContext(ctx, fs, []string{"-nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port), "-http-addr", "", "-log-format", "json", "-connect-timeout", "2m"}, &stderr,
			func(ctx context.Context, env Env) error {
				close(ran)
				<-ctx.Done()
				return ctx.Err()
			})
	}()
	select {
	case code := <-done:
		t.Fatalf("exited %d with no NATS server instead of waiting: %s", code, stderr.String())
	case <-time.After(2 * time.Second):
	}
	natstest.NewServerWith(t, t.TempDir(), func(o *server.Options) { o.Port = port })
	select {
	case <-ran:
	case code := <-done:
		t.Fatalf("exited %d: %s", code, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("body did not run within 60 s of the server starting: %s", stderr.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after cancellation", code)
	}
	if !strings.Contains(stderr.String(), "NATS not ready; trying again") {
		t.Errorf("the wait was not logged: %s", stderr.String())
	}
}

// A server that goes silent (paused, or cut off by a partition, with no
// TCP reset) is noticed within seconds: the connection pings it every
// PingInterval and gives up after two unanswered pings. With nats.go's
// default (2 min) this would take minutes.
func TestSilentServerNoticedInSeconds(t *testing.T) {
	srv := natstest.NewServer(t)
	proxy := natstest.NewProxy(t, srv)
	nc, _, err := Connect(context.Background(), proxy.URL(), "test", eventlog.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lost := make(chan time.Time, 1)
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) {
		select {
		case lost <- time.Now():
		default:
		}
	})
	muted := time.Now()
	proxy.Mute()
	select {
	case at := <-lost:
		t.Logf("silence noticed after %v", at.Sub(muted).Round(10*time.Millisecond))
		if took := at.Sub(muted); took > 4*PingInterval {
			t.Errorf("silence noticed after %v, want within %v", took, 4*PingInterval)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a silent server not noticed within 60 s")
	}
}
