package nixbuild

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBuildBatch(t *testing.T) {
	ok, _ := instantiate(t, "echo hello-ok; echo second-ok; echo done > $out")
	bad, _ := instantiate(t, "echo compiling-bad; echo broken >&2; exit 3")
	silent, _ := instantiate(t, "echo quiet-start; sleep 300")
	dir := t.TempDir()
	var mu sync.Mutex
	lines := map[string][]string{}
	job := func(name, drv string) Job {
		return Job{DrvPath: drv, LogPath: filepath.Join(dir, name+".log.zst"), OnLine: func(l []byte) {
			mu.Lock()
			lines[name] = append(lines[name], string(l))
			mu.Unlock()
		}}
	}
	jobs := []Job{job("ok", ok), job("bad", bad), job("silent", silent)}
	res, err := BuildBatch(context.Background(), jobs, BatchOptions{NixOptions: noSubst, Jobs: 3, NoOutputTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Outcome != Succeeded {
		t.Errorf("ok: %+v", r)
	}
	if r := res[1]; r.Outcome != Failed || r.ExitCode != 3 || !strings.Contains(r.Tail, "broken") {
		t.Errorf("bad: %+v, want failed with exit code 3 and its output", r)
	}
	if r := res[2]; r.Outcome != Interrupted || r.Interruption != Timeout || !strings.Contains(r.Detail, "no output for 1s") {
		t.Errorf("silent: %+v, want interrupted by the no-output timeout", r)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, want := range map[string]string{"ok": "hello-ok", "bad": "compiling-bad", "silent": "quiet-start"} {
		got := strings.Join(lines[name], "\n")
		if !strings.Contains(got, want) {
			t.Errorf("%s's lines %q lack %q", name, got, want)
		}
		for other, w := range map[string]string{"ok": "hello-ok", "bad": "compiling-bad", "silent": "quiet-start"} {
			if other != name && strings.Contains(got, w) {
				t.Errorf("%s's lines carry %s's output %q", name, other, w)
			}
		}
		if log := readLog(t, filepath.Join(dir, name+".log.zst")); !strings.Contains(log, want) {
			t.Errorf("%s's log file %q lacks %q", name, log, want)
		}
	}
}

func TestBuildBatchCancelled(t *testing.T) {
	slow, _ := instantiate(t, "echo started; sleep 300")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	begin := time.Now()
	res, err := BuildBatch(ctx, []Job{{DrvPath: slow}}, BatchOptions{NixOptions: noSubst})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Outcome != Interrupted || r.Interruption != Cancelled {
		t.Fatalf("result %+v, want cancelled", r)
	}
	if took := time.Since(begin); took > 30*time.Second {
		t.Fatalf("cancellation took %v", took)
	}
}
