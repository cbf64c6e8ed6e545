package closure

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 63, 64, 65, 200_000} {
		path := filepath.Join(dir, "f")
		want := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readFile(path, make([]byte, 64))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("readFile(%d bytes) = %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := readFile(filepath.Join(dir, "missing"), nil); !os.IsNotExist(err) || !strings.Contains(err.Error(), "open "+dir) {
		t.Errorf("readFile(missing) = %v, want os.ReadFile's error", err)
	}
	if _, err := readFile(dir, nil); err == nil || !strings.Contains(err.Error(), "read "+dir) {
		t.Errorf("readFile(dir) = %v, want os.ReadFile's error", err)
	}
}

// TestWalkMissingInput reads a .drv whose input is not in the store.
func TestWalkMissingInput(t *testing.T) {
	const gone = "/nix/store/00000000000000000000000000000000-gone.drv"
	drv := filepath.Join(t.TempDir(), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top.drv")
	aterm := `Derive([("out","/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top","","")],[("` + gone + `",["out"])],[],"x86_64-linux","/bin/sh",[],[("name","top"),("out","/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top")])`
	if err := os.WriteFile(drv, []byte(aterm), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Walk(context.Background(), []string{drv})
	want := "derivation " + gone + " does not exist in the store (an input of " + drv + ")"
	if err == nil || err.Error() != want {
		t.Fatalf("Walk = %v, want %s", err, want)
	}
}
