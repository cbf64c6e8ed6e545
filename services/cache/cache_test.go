package cache

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ekaci/ekaci/libs/nixtest"
)

func newCache(t *testing.T, dir string, maxObj, max int64) (*Cache, string) {
	t.Helper()
	c, err := New(Config{Dir: dir, MaxObjectBytes: maxObj, MaxBytes: max, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func do(t *testing.T, method, url string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const hashA = "0123456789abcdfghijklmnpqrsvwxyz"

func TestRequests(t *testing.T) {
	_, url := newCache(t, t.TempDir(), 1024, 1<<20)
	for _, tc := range []struct {
		name, method, path string
		body               string
		want               int
		wantBody           string
	}{
		{"cache info", "GET", "/nix-cache-info", "", 200, "StoreDir: /nix/store"},
		{"nix writes its own cache info", "PUT", "/nix-cache-info", "StoreDir: /nix/store\n", 200, ""},
		{"missing narinfo", "GET", "/" + hashA + ".narinfo", "", 404, ""},
		{"put narinfo", "PUT", "/" + hashA + ".narinfo", "StorePath: x\n", 201, ""},
		{"get narinfo", "GET", "/" + hashA + ".narinfo", "", 200, "StorePath: x\n"},
		{"head narinfo", "HEAD", "/" + hashA + ".narinfo", "", 200, ""},
		{"put nar", "PUT", "/nar/" + hashA + ".nar.zst", "nar bytes", 201, ""},
		{"get nar", "GET", "/nar/" + hashA + ".nar.zst", "", 200, "nar bytes"},
		{"put log", "PUT", "/log/" + hashA + "-hello-1.0.drv", "build log", 201, ""},
		{"a name outside the layout", "PUT", "/etc/passwd", "x", 404, "not a file of a Nix binary cache"},
		{"a way out of the directory", "GET", "/nar/../../../etc/passwd", "", 404, ""},
		{"a short hash", "PUT", "/abc.narinfo", "x", 404, ""},
		{"too large", "PUT", "/nar/" + hashA + "x.nar", strings.Repeat("x", 1025), 413, "larger than 1024 bytes"},
		{"delete", "DELETE", "/" + hashA + ".narinfo", "", 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, url+tc.path, []byte(tc.body))
			if code != tc.want || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d with %q", tc.method, tc.path, code, body, tc.want, tc.wantBody)
			}
		})
	}
}

// An upload that is cut off leaves nothing under its name, and a temporary
// file a crash left is gone at the next start.
func TestUploadWholeOrNothing(t *testing.T) {
	dir := t.TempDir()
	_, url := newCache(t, dir, 1<<20, 1<<30)
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /nar/%s.nar HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf a nar", hashA)
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		if len(tmps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temporary files left after a cut-off upload: %v", tmps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := do(t, "GET", url+"/nar/"+hashA+".nar", nil); code != 404 {
		t.Fatalf("GET of a cut-off upload = %d, want 404", code)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "upload-123"), []byte("left by a crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir, MaxObjectBytes: 1, MaxBytes: 1, Logger: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Fatalf("New left %v in tmp/", tmps)
	}
}

// Past its budget the cache drops the oldest paths, narinfo with its NAR:
// no narinfo it keeps names a NAR it lost.
func TestEvictionKeepsNarinfoWithNar(t *testing.T) {
	dir := t.TempDir()
	c, url := newCache(t, dir, 1<<20, 10_000)
	for i := range 10 {
		h := fmt.Sprintf("%032d", i)
		nar := "nar/" + h + "1.nar"
		if code, _ := do(t, "PUT", url+"/"+nar, bytes.Repeat([]byte("n"), 1500)); code != 201 {
			t.Fatalf("PUT %s = %d", nar, code)
		}
		if code, _ := do(t, "PUT", url+"/"+h+".narinfo", []byte("StorePath: /nix/store/"+h+"-x\nURL: "+nar+"\n")); code != 201 {
			t.Fatalf("PUT narinfo %d = %d", i, code)
		}
		time.Sleep(10 * time.Millisecond) // distinct modification times
	}
	files, err := c.files()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	kept := map[string]bool{}
	for _, f := range files {
		total += f.size
		kept[f.name] = true
	}
	if total > 10_000 || c.total != total {
		t.Fatalf("cache holds %d bytes (counted %d), want at most 10000 and the count right", total, c.total)
	}
	if !kept[fmt.Sprintf("%032d.narinfo", 9)] {
		t.Errorf("the newest narinfo was evicted; kept %v", kept)
	}
	if kept[fmt.Sprintf("%032d.narinfo", 0)] {
		t.Errorf("the oldest narinfo was kept; kept %v", kept)
	}
	for name := range kept {
		if strings.HasSuffix(name, ".narinfo") {
			if nar := narOf(filepath.Join(dir, name)); !kept[nar] {
				t.Errorf("%s kept, its NAR %s evicted", name, nar)
			}
		}
	}
}

// Nix itself pushes a .drv closure and a build's outputs with nix copy
// --to http://, and another store substitutes from the cache: the .drv
// closure by nix copy --from, and the dependency's output while
// nix-store --realise builds the top derivation.
func TestNixThroughCache(t *testing.T) {
	nixtest.Require(t)
	tmp := t.TempDir()
	_, url := newCache(t, filepath.Join(tmp, "cache"), 64<<20, 1<<30)
	salt := fmt.Sprintf("%d", time.Now().UnixNano())
	expr := fmt.Sprintf(`let dep = derivation { name = "cache-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo %s > $out"]; };
in { dep = dep; top = derivation { name = "cache-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "read x < ${dep}; echo \"$x top\" > $out"]; }; }`, salt)
	f := filepath.Join(tmp, "default.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	nix := func(args ...string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return strings.TrimSpace(string(out))
	}
	no := nixtest.NoSubstitutersArgs()
	drvs := strings.Fields(nix(append([]string{"nix-instantiate", "-A", "top", "-A", "dep", f}, no...)...))
	top, dep := drvs[0], drvs[1]
	nixCmd := []string{"nix", "--extra-experimental-features", "nix-command"}
	// The evaluator's push, then a builder's build and push of dep.
	nix(append(append(nixCmd, "copy", "--derivation", "--to", url+"?compression=zstd", top), no...)...)
	depOut := nix(append([]string{"nix-store", "--realise", dep}, no...)...)
	nix(append(append(nixCmd, "copy", "--to", url, dep), no...)...)

	// Another builder: its own store, the cache as its only substituter.
	other := filepath.Join(tmp, "other")
	nix(append(nixCmd, "copy", "--no-check-sigs", "--derivation", "--from", url, "--store", other, top)...)
	for _, p := range []string{top, dep} {
		nix("nix-store", "--store", other, "--check-validity", p)
	}
	// dep's output comes from the cache, not from a build: a build in a
	// store under another root cannot run /bin/sh (no chroot here), so
	// substitution is the only way it becomes valid.
	nix("nix-store", "--store", other, "--realise", dep, "--option", "substituters", url, "--option", "require-sigs", "false")
	nix("nix-store", "--store", other, "--check-validity", depOut)
	if got := nix("cat", filepath.Join(other, depOut)); got != salt {
		t.Fatalf("dep's output from the cache holds %q, want %q", got, salt)
	}
}
