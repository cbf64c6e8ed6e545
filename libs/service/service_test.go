package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

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
		{"unreachable", []string{"-nats-url", "nats://127.0.0.1:1", "-http-addr", ""}, 1, "cannot reach NATS at nats://127.0.0.1:1"},
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
			if _, err := env.Log.JetStream().Stream(ctx, eventlog.EventsStream); err != nil {
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
