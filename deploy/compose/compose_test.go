// Package compose_test checks deploy/compose/compose.yaml with the tools
// that will read it.
package compose_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigValid1_29 asks docker-compose 1.29 (Debian 12's; it needs no
// engine for this) to check the file against its schema, with the
// variables a run sets and without them (their defaults).
func TestConfigValid1_29(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatal("docker-compose not found: apt-get install docker-compose (this project's machines have 1.29)")
	}
	secret := filepath.Join(t.TempDir(), "webhook.secret")
	seccomp, err := filepath.Abs("checker-seccomp.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"defaults", nil},
		{"a test run's", []string{"EKACI_TAG=t1", "EKACI_REPOS=" + t.TempDir(), "EKACI_WEBHOOK_SECRET=" + secret, "EKACI_WEBHOOK_ADDR=127.0.0.1:", "EKACI_NIX_SUBSTITUTERS=https://cache.example",
			"EKACI_CHECKER_SECCOMP=" + seccomp}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// From the repository's top, as README runs it: 1.29 reads the
			// checker's seccomp profile from its working directory.
			cmd := exec.Command(bin, "-f", "deploy/compose/compose.yaml", "config", "-q")
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), tc.env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("docker-compose config -q: %v\n%s", err, out)
			}
		})
	}
	// And it can fail: a key 1.29's schema does not know.
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	src, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), "  nats-1:\n", "  nats-1:\n    bogus_key: 1\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", bad, "config", "-q")
	cmd.Env = append(os.Environ(), "EKACI_CHECKER_SECCOMP="+seccomp)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("docker-compose config -q accepted an unknown key: %s", out)
	}
}
