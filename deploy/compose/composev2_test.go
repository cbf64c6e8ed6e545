package compose_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// TestConfigValidV2 loads compose.yaml (and the mesh test's override)
// with compose-go, the loader and schema validation Compose v2 runs
// (`docker compose config`); Debian 12 ships no Compose v2 binary.
func TestConfigValidV2(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secret, []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"EKACI_REPOS=" + t.TempDir(), "EKACI_WEBHOOK_SECRET=" + secret, "EKACI_WEBHOOK_ADDR=127.0.0.1:", "EKACI_ADMIN_ADDR=127.0.0.1:"}
	for _, tc := range []struct {
		name  string
		files []string
	}{
		{"compose.yaml", []string{"compose.yaml"}},
		{"with the test override", []string{"compose.yaml", "compose.test.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := cli.NewProjectOptions(tc.files, cli.WithName("ekaci"), cli.WithEnv(env), cli.WithWorkingDirectory("."))
			if err != nil {
				t.Fatal(err)
			}
			p, err := cli.ProjectFromOptions(context.Background(), opts)
			if err != nil {
				t.Fatalf("compose-go: %v", err)
			}
			for _, name := range []string{"nats-1", "nats-2", "nats-3", "cache", "gitter", "reader", "evaluator", "ingress", "router", "builder-1", "builder-2", "recorder", "notifier", "webhook", "admin"} {
				s, ok := p.Services[name]
				if !ok {
					t.Errorf("service %s missing", name)
					continue
				}
				if s.PullPolicy != "never" || s.User != "" && s.User != "65532:65532" {
					t.Errorf("%s: pull_policy %q, user %q", name, s.PullPolicy, s.User)
				}
				if s.HealthCheck == nil || len(s.HealthCheck.Test) < 2 || s.HealthCheck.Test[0] != "CMD" {
					t.Errorf("%s: healthcheck %+v, want an exec-form CMD (the images have no shell)", name, s.HealthCheck)
				}
			}
			for _, port := range p.Services["webhook"].Ports {
				if port.HostIP != "127.0.0.1" {
					t.Errorf("webhook published on %q, want loopback", port.HostIP)
				}
			}
		})
	}
	// And it can fail: a key the schema does not know.
	src, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), "  nats-1:\n", "  nats-1:\n    bogus_key: 1\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{bad}, cli.WithName("ekaci"), cli.WithEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ProjectFromOptions(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "bogus_key") {
		t.Fatalf("compose-go on an unknown key: %v, want it refused", err)
	}
}
