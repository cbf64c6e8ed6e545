package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
)

// startServer runs ServeListener on a real loopback port and returns its
// base URL; at cleanup it cancels and requires a clean (nil) return.
func startServer(t *testing.T, m *Metrics, h *Health) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, l, m, h, zerolog.Nop()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListener did not return within 10s of cancel")
		}
	})
	return "http://" + l.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	// Vectors appear in the exposition once a label set exists.
	m.EventsAppended.WithLabelValues("drv", "DrvQueued").Inc()
	m.BuildQueueDepth.WithLabelValues("x86_64-linux", "local").Set(4)
	m.BuildsActive.WithLabelValues("x86_64-linux", "local").Set(2)
	m.ConsumerLag.WithLabelValues("EKACI_EVENTS", "recorder").Set(7)
	m.BuildsFinished.WithLabelValues("succeeded").Inc()
	m.BuildDuration.WithLabelValues("succeeded").Observe(42)
	m.ProjectionApplied.WithLabelValues("builds").Set(99)
	m.StageHandled.WithLabelValues("router", "ok").Inc()

	base := startServer(t, m, nil)
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}

	tests := []struct {
		name   string
		typ    dto.MetricType
		labels []string
		value  float64 // counter/gauge value, or histogram sample sum
	}{
		{"ekaci_events_appended_total", dto.MetricType_COUNTER, []string{"aggregate", "type"}, 1},
		{"ekaci_build_queue_depth", dto.MetricType_GAUGE, []string{"system", "class"}, 4},
		{"ekaci_builds_active", dto.MetricType_GAUGE, []string{"system", "builder"}, 2},
		{"ekaci_consumer_lag_messages", dto.MetricType_GAUGE, []string{"stream", "consumer"}, 7},
		{"ekaci_builds_finished_total", dto.MetricType_COUNTER, []string{"outcome"}, 1},
		{"ekaci_build_duration_seconds", dto.MetricType_HISTOGRAM, []string{"outcome"}, 42},
		{"ekaci_projection_applied_sequence", dto.MetricType_GAUGE, []string{"projection"}, 99},
		{"ekaci_stage_handled_total", dto.MetricType_COUNTER, []string{"stage", "result"}, 1},
		// The Go and process collectors are registered too.
		{"go_goroutines", dto.MetricType_GAUGE, nil, -1},
		{"process_cpu_seconds_total", dto.MetricType_COUNTER, nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mf, ok := families[tt.name]
			if !ok {
				t.Fatalf("%s not exposed", tt.name)
			}
			if mf.GetType() != tt.typ {
				t.Errorf("type %v, want %v", mf.GetType(), tt.typ)
			}
			if mf.GetHelp() == "" {
				t.Error("no help text")
			}
			if len(mf.Metric) != 1 && tt.labels != nil {
				t.Fatalf("%d series, want 1", len(mf.Metric))
			}
			if tt.labels == nil {
				return
			}
			s := mf.Metric[0]
			var names []string
			for _, lp := range s.Label {
				names = append(names, lp.GetName())
			}
			want := slices.Sorted(slices.Values(tt.labels)) // exposition sorts labels
			if !slices.Equal(names, want) {
				t.Errorf("labels %v, want %v", names, want)
			}
			var got float64
			switch tt.typ {
			case dto.MetricType_COUNTER:
				got = s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				got = s.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				got = s.GetHistogram().GetSampleSum()
			}
			if got != tt.value {
				t.Errorf("value %v, want %v", got, tt.value)
			}
		})
	}
}

func TestHealthEndpoints(t *testing.T) {
	h := &Health{}
	h.Expect("evaluator")
	base := startServer(t, NewMetrics(), h)

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}

	steps := []struct {
		name     string
		do       func()
		wantCode int
		want     []string // substrings of the body
		notWant  []string
	}{
		{
			name:     "expected component not reported",
			do:       func() {},
			wantCode: http.StatusServiceUnavailable,
			want:     []string{"evaluator: not reported yet"},
		},
		{
			name:     "one ready one failing",
			do:       func() { h.SetReady("evaluator", nil); h.SetReady("builder", errors.New("nix not found")) },
			wantCode: http.StatusServiceUnavailable,
			want:     []string{"builder: nix not found"},
			notWant:  []string{"evaluator"},
		},
		{
			name:     "all ready",
			do:       func() { h.SetReady("builder", nil) },
			wantCode: http.StatusOK,
			want:     []string{"ok"},
		},
		{
			name:     "back to not ready",
			do:       func() { h.SetReady("evaluator", errors.New("nats: connection closed")) },
			wantCode: http.StatusServiceUnavailable,
			want:     []string{"evaluator: nats: connection closed"},
			notWant:  []string{"builder"},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			code, body := get(t, base+"/readyz")
			if code != s.wantCode {
				t.Errorf("/readyz = %d, want %d; body %q", code, s.wantCode, body)
			}
			for _, w := range s.want {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
			for _, w := range s.notWant {
				if strings.Contains(body, w) {
					t.Errorf("body %q mentions %q", body, w)
				}
			}
		})
	}
}

func TestServeNoComponentsIsReady(t *testing.T) {
	base := startServer(t, NewMetrics(), nil)
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with no components = %d %q, want 200", code, body)
	}
}

func TestServeListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Serve(context.Background(), l.Addr().String(), NewMetrics(), nil, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Serve on a taken port = %v, want an error naming the address", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, NewMetrics(), nil, zerolog.Nop()) }()
	// Poll until the server answers, then stop it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancel")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("port still accepting after Serve returned")
	}
}
