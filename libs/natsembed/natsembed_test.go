package natsembed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// start starts a server for a test and shuts it down at cleanup.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

func TestRestartKeepsStreamMessages(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first, err := Start(Config{DataDir: dir, Port: RandomPort})
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	js := connect(t, first.ClientURL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "EVENTS", Subjects: []string{"evt.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := js.Publish(ctx, "evt."+strconv.Itoa(i), []byte("event "+strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := first.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("store not under DataDir/jetstream: %v", err)
	}

	// The same data dir again: the lock must have been released and the
	// stream recovered with every message.
	second := start(t, Config{DataDir: dir, Port: RandomPort})
	js = connect(t, second.ClientURL())
	st, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("messages after restart = %d, want 3", info.State.Msgs)
	}
	for i := uint64(1); i <= 3; i++ {
		m, err := st.GetMsg(ctx, i)
		if err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		if want := fmt.Sprintf("event %d", i); string(m.Data) != want {
			t.Errorf("message %d = %q, want %q", i, m.Data, want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) Config
		want  error
		// the message must name these (the problem and the fix)
		mentions func(cfg Config) []string
	}{
		{
			name: "data dir is a file",
			setup: func(t *testing.T) Config {
				f := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return Config{DataDir: f, Port: RandomPort}
			},
			want:     ErrDataDir,
			mentions: func(cfg Config) []string { return []string{cfg.DataDir, "--data-dir", "EKACI_DATA_DIR"} },
		},
		{
			name:     "no data dir",
			setup:    func(t *testing.T) Config { return Config{Port: RandomPort} },
			want:     ErrDataDir,
			mentions: func(Config) []string { return []string{"--data-dir"} },
		},
		{
			name: "client port taken",
			setup: func(t *testing.T) Config {
				return Config{DataDir: t.TempDir(), Port: occupy(t)}
			},
			want: ErrPortInUse,
			mentions: func(cfg Config) []string {
				return []string{strconv.Itoa(cfg.Port), "--nats-port", "EKACI_NATS_PORT"}
			},
		},
		{
			name: "monitoring port taken",
			setup: func(t *testing.T) Config {
				return Config{DataDir: t.TempDir(), Port: RandomPort, HTTPPort: occupy(t)}
			},
			want:     ErrPortInUse,
			mentions: func(cfg Config) []string { return []string{strconv.Itoa(cfg.HTTPPort), "monitoring"} },
		},
		{
			name: "store held by another server",
			setup: func(t *testing.T) Config {
				dir := t.TempDir()
				start(t, Config{DataDir: dir, Port: RandomPort})
				return Config{DataDir: dir, Port: RandomPort}
			},
			want: ErrStoreLocked,
			mentions: func(cfg Config) []string {
				return []string{cfg.DataDir, "pid " + strconv.Itoa(os.Getpid()), "--data-dir"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.setup(t)
			s, err := Start(cfg)
			if err == nil {
				_ = s.Shutdown(context.Background())
				t.Fatalf("Start succeeded, want %v", tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			for _, m := range tt.mentions(cfg) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

// occupy listens on a free loopback port for the rest of the test.
func occupy(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// A failed start leaves nothing behind: the store lock is free and the
// port can be used at once.
func TestFailedStartReleasesLock(t *testing.T) {
	dir := t.TempDir()
	if _, err := Start(Config{DataDir: dir, Port: RandomPort, HTTPPort: occupy(t)}); !errors.Is(err, ErrPortInUse) {
		t.Fatalf("error = %v, want ErrPortInUse", err)
	}
	start(t, Config{DataDir: dir, Port: RandomPort})
}

const childEnv = "NATSEMBED_TEST_UNWRITABLE_DIR"

// TestDataDirNotWritable needs a directory this process cannot write. Root
// ignores file modes, so as root the check runs in a copy of this test
// binary started as nobody (uid 65534).
func TestDataDirNotWritable(t *testing.T) {
	if dir := os.Getenv(childEnv); dir != "" {
		// The child: report the error for the parent to judge.
		_, err := Start(Config{DataDir: dir, Port: RandomPort})
		fmt.Printf("START-ERROR: %v\n", err)
		if !errors.Is(err, ErrDataDir) {
			t.Fatalf("error = %v, want ErrDataDir", err)
		}
		return
	}
	if os.Geteuid() != 0 {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		_, err := Start(Config{DataDir: dir, Port: RandomPort})
		checkNotWritable(t, err, dir)
		return
	}

	// As root: a world-readable copy of the test binary and a root-owned
	// data dir, run as nobody.
	base, err := os.MkdirTemp("", "natsembed-unwritable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "natsembed.test")
	copyFile(t, self, bin, 0o755)
	dir := filepath.Join(base, "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestDataDirNotWritable$", "-test.v")
	cmd.Dir = base
	cmd.Env = []string{childEnv + "=" + dir, "PATH=/usr/bin:/bin", "HOME=" + base}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	_, msg, ok := strings.Cut(string(out), "START-ERROR: ")
	if !ok {
		t.Fatalf("child printed no error:\n%s", out)
	}
	msg, _, _ = strings.Cut(msg, "\n")
	t.Logf("error as nobody: %s", msg)
	checkNotWritable(t, errors.New(msg), dir)
}

func checkNotWritable(t *testing.T, err error, dir string) {
	t.Helper()
	if err == nil {
		t.Fatal("Start succeeded on an unwritable data dir")
	}
	for _, m := range []string{dir, "--data-dir", "EKACI_DATA_DIR"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// SyncAlways reaches nats-server, as its monitoring endpoint reports.
func TestSyncAlwaysApplied(t *testing.T) {
	for _, sync := range []bool{true, false} {
		t.Run(fmt.Sprintf("sync_always=%v", sync), func(t *testing.T) {
			s := start(t, Config{DataDir: t.TempDir(), Port: RandomPort, HTTPPort: RandomPort, SyncAlways: sync})
			if s.MonitorURL() == "" {
				t.Fatal("no monitor URL with HTTPPort set")
			}
			resp, err := http.Get(s.MonitorURL() + "/varz")
			if err != nil {
				t.Fatalf("varz: %v", err)
			}
			defer resp.Body.Close()
			var varz struct {
				JetStream struct {
					Config struct {
						SyncAlways bool `json:"sync_always"`
					} `json:"config"`
				} `json:"jetstream"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&varz); err != nil {
				t.Fatalf("decode varz: %v", err)
			}
			if varz.JetStream.Config.SyncAlways != sync {
				t.Errorf("sync_always = %v, want %v", varz.JetStream.Config.SyncAlways, sync)
			}
		})
	}
}

func TestURLs(t *testing.T) {
	tests := []struct {
		name, host string
		httpPort   int
		wantClient string // prefix
		wantHTTP   string // prefix, "" = monitoring off
	}{
		{name: "default host, no monitoring", wantClient: "nats://127.0.0.1:"},
		{name: "wildcard host reported as loopback", host: "0.0.0.0", httpPort: RandomPort,
			wantClient: "nats://127.0.0.1:", wantHTTP: "http://127.0.0.1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, Config{DataDir: t.TempDir(), Host: tt.host, Port: RandomPort, HTTPPort: tt.httpPort})
			if got := s.ClientURL(); !strings.HasPrefix(got, tt.wantClient) || strings.HasSuffix(got, ":-1") {
				t.Errorf("ClientURL = %q, want %q<port>", got, tt.wantClient)
			}
			got := s.MonitorURL()
			if tt.wantHTTP == "" && got != "" || tt.wantHTTP != "" && !strings.HasPrefix(got, tt.wantHTTP) {
				t.Errorf("MonitorURL = %q, want %q", got, tt.wantHTTP)
			}
			nc, err := nats.Connect(s.ClientURL())
			if err != nil {
				t.Fatalf("connect %s: %v", s.ClientURL(), err)
			}
			nc.Close()
		})
	}
}

// syncBuf is a goroutine-safe log sink: nats-server logs from its own
// goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsGoThroughZerolog(t *testing.T) {
	var buf syncBuf
	lg := zerolog.New(&buf).Level(zerolog.InfoLevel)
	start(t, Config{DataDir: t.TempDir(), Port: RandomPort, Logger: lg})
	var sawStart bool
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e struct{ Level, Message string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not a zerolog JSON line: %q", line)
		}
		if e.Level == "debug" || e.Level == "trace" {
			t.Errorf("debug line at info level: %q", line)
		}
		if e.Level == "info" && strings.Contains(e.Message, "Server is ready") {
			sawStart = true
		}
	}
	if !sawStart {
		t.Errorf("no info line %q in:\n%s", "Server is ready", buf.String())
	}
}

// A port lost to another process between the check and nats-server's own
// listen shows up only as a fatal log line; it must still become
// ErrPortInUse naming the port. The lines are nats-server v2.15.2's formats.
func TestFatalLineBecomesError(t *testing.T) {
	cfg := Config{Host: "127.0.0.1", Port: 4333, HTTPPort: 8333}
	tests := []struct {
		name, line string
		want       error
		mentions   []string
	}{
		{
			name:     "client port",
			line:     `Error listening on port: 127.0.0.1:4333, "listen tcp 127.0.0.1:4333: bind: address already in use"`,
			want:     ErrPortInUse,
			mentions: []string{"4333", "--nats-port", "EKACI_NATS_PORT"},
		},
		{
			name:     "monitoring port",
			line:     `Can't start monitoring: can't listen to the monitor port: listen tcp 127.0.0.1:8333: bind: address already in use`,
			want:     ErrPortInUse,
			mentions: []string{"8333", "monitoring"},
		},
		{
			name:     "jetstream refuses",
			line:     "Can't start JetStream: storage directory is not writable",
			want:     ErrStart,
			mentions: []string{"storage directory is not writable"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fatalError(tt.line, cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

// TestMaxStoreBoundsReservations: the configured store limit is the one
// the server reserves stream budgets against, whatever the disk's free
// space: a budget over it is refused, one within it accepted, and the
// default holds ekaci's default budgets (21 GiB).
func TestMaxStoreBoundsReservations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxStore int64
		budget   int64
		ok       bool
	}{
		{"budget within the limit", 64 << 20, 32 << 20, true},
		{"budget over the limit", 64 << 20, 100 << 20, false},
		{"default limit holds ekaci's default budgets", 0, 21 << 30, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := start(t, Config{DataDir: t.TempDir(), Port: RandomPort, MaxStore: tc.maxStore})
			js := connect(t, s.ClientURL())
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage, MaxBytes: tc.budget,
			})
			if (err == nil) != tc.ok {
				t.Fatalf("create a stream of %d MiB on a %d MiB store: err %v, want ok %v", tc.budget>>20, tc.maxStore>>20, err, tc.ok)
			}
		})
	}
}
