package machines

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/nixtest"
)

func TestParse(t *testing.T) {
	got, err := Parse(`
# the team's builders
ssh://builder@big x86_64-linux,aarch64-linux /root/.ssh/id 8 2 kvm,big-parallel - c3NoLWVkMjU1MTk=
small x86_64-linux - 2
ssh-ng://gpu x86_64-linux - - - cuda cuda ; ssh://arm aarch64-linux
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Machine{
		{URI: "ssh://builder@big", Systems: []string{"x86_64-linux", "aarch64-linux"}, SSHKey: "/root/.ssh/id", MaxJobs: 8, SpeedFactor: 2, Features: []string{"kvm", "big-parallel"}, PublicHostKey: "c3NoLWVkMjU1MTk="},
		{URI: "ssh://small", Systems: []string{"x86_64-linux"}, MaxJobs: 2, SpeedFactor: 1},
		{URI: "ssh-ng://gpu", Systems: []string{"x86_64-linux"}, MaxJobs: 1, SpeedFactor: 1, Features: []string{"cuda"}, MandatoryFeatures: []string{"cuda"}},
		{URI: "ssh://arm", Systems: []string{"aarch64-linux"}, MaxJobs: 1, SpeedFactor: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if line := got[0].Line(); line != "ssh://builder@big x86_64-linux,aarch64-linux /root/.ssh/id 8 2 kvm,big-parallel - c3NoLWVkMjU1MTk=" {
		t.Fatalf("Line() = %q", line)
	}
	again, err := Parse(got[2].Line())
	if err != nil || !reflect.DeepEqual(again[0], got[2]) {
		t.Fatalf("round trip: %+v, %v", again, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := map[string]string{
		"ssh://a x86_64-linux - two":   "line 1: field 4 (max-jobs) is \"two\"",
		"\nssh://a x86_64-linux - 1 0": "line 2: field 5 (speed-factor) is \"0\"",
		"ssh://a":                      "serves no system",
		"a b c d e f g h i":            "9 fields",
	}
	for text, want := range tests {
		if _, err := Parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", text, err, want)
		}
	}
}

func TestCan(t *testing.T) {
	m := Machine{Systems: []string{"x86_64-linux"}, Features: []string{"kvm", "cuda"}, MandatoryFeatures: []string{"cuda"}}
	tests := []struct {
		system   string
		required []string
		want     bool
	}{
		{"x86_64-linux", []string{"cuda"}, true},
		{"x86_64-linux", []string{"cuda", "kvm"}, true},
		{"x86_64-linux", nil, false},             // mandatory cuda not asked for
		{"x86_64-linux", []string{"kvm"}, false}, // likewise
		{"aarch64-linux", []string{"cuda"}, false},
		{"x86_64-linux", []string{"cuda", "big-parallel"}, false},
	}
	for _, tt := range tests {
		if got := m.Can(tt.system, tt.required); got != tt.want {
			t.Errorf("Can(%s, %v) = %v, want %v", tt.system, tt.required, got, tt.want)
		}
	}
}

func TestHealth(t *testing.T) {
	var mu sync.Mutex
	down := map[string]bool{"ssh://b": true}
	ping := func(ctx context.Context, uri string) error {
		mu.Lock()
		defer mu.Unlock()
		if down[uri] {
			return errors.New("cannot connect")
		}
		return nil
	}
	ms := []Machine{{URI: "ssh://a", Systems: []string{"x86_64-linux"}}, {URI: "ssh://b", Systems: []string{"aarch64-linux"}}}
	h := NewHealth(ms, ping, 20*time.Millisecond, zerolog.Nop())
	if h.Healthy("ssh://a") {
		t.Fatal("healthy before any check")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		h.Run(ctx)
	}()
	defer func() {
		cancel()
		<-ran
	}()

	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if got, err := h.WaitUsable(wctx, "x86_64-linux", nil); err != nil || len(got) != 1 || got[0].URI != "ssh://a" {
		t.Fatalf("WaitUsable(x86_64) = %v, %v", got, err)
	}
	waited := make(chan []Machine)
	go func() {
		got, _ := h.WaitUsable(wctx, "aarch64-linux", nil)
		waited <- got
	}()
	select {
	case got := <-waited:
		t.Fatalf("aarch64 usable while its only builder is down: %v", got)
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	down["ssh://b"] = false
	mu.Unlock()
	if got := <-waited; len(got) != 1 || got[0].URI != "ssh://b" {
		t.Fatalf("after recovery: %v", got)
	}
}

func TestNixPing(t *testing.T) {
	nixtest.Require(t)
	ctx := context.Background()
	if err := NixPing(ctx, t.TempDir()); err != nil {
		t.Fatalf("a local store directory: %v", err)
	}
	err := NixPing(ctx, "ssh://nonexistent.invalid")
	if err == nil || !strings.Contains(err.Error(), "nonexistent.invalid") {
		t.Fatalf("unreachable builder: %v", err)
	}
}
