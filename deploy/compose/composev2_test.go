package compose_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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
			for _, name := range []string{"nats-1", "nats-2", "nats-3", "cache", "gitter", "reader", "evaluator", "ingress", "router", "builder-1", "builder-2", "checker", "recorder", "notifier", "webhook", "admin"} {
				s, ok := p.Services[name]
				if !ok {
					t.Errorf("service %s missing", name)
					continue
				}
				if name == "checker" {
					checkerPrivileges(t, s)
				} else if s.PullPolicy != "never" || s.User != "" && s.User != "65532:65532" || len(s.CapAdd) > 0 || s.Privileged || len(s.SecurityOpt) > 0 || len(s.Devices) > 0 {
					t.Errorf("%s: pull_policy %q, user %q, cap_add %v, privileged %v, security_opt %v, devices %v; want never, unprivileged",
						name, s.PullPolicy, s.User, s.CapAdd, s.Privileged, s.SecurityOpt, s.Devices)
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

// checkerPrivileges: the checker is the one service with privileges, and
// has exactly those README lists: root in the container with every
// capability dropped but the sandbox's, seccomp on (Docker's profile plus
// pivot_root), no new privileges, the tun device.
func checkerPrivileges(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	want := []string{"CHOWN", "DAC_OVERRIDE", "KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN", "SYS_PTRACE"}
	caps := slices.Sorted(slices.Values(s.CapAdd))
	if s.User != "0:0" || s.Privileged || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Equal(caps, want) {
		t.Errorf("checker: user %q, privileged %v, cap_drop %v, cap_add %v; want 0:0, not privileged, ALL dropped, %v added", s.User, s.Privileged, s.CapDrop, caps, want)
	}
	opts := strings.Join(s.SecurityOpt, " ")
	if !strings.Contains(opts, "no-new-privileges:true") || !strings.Contains(opts, "seccomp=") || strings.Contains(opts, "unconfined") {
		t.Errorf("checker: security_opt %v, want no-new-privileges and a seccomp profile, nothing unconfined", s.SecurityOpt)
	}
	if len(s.Devices) != 1 || s.Devices[0].Source != "/dev/net/tun" {
		t.Errorf("checker: devices %+v, want /dev/net/tun alone", s.Devices)
	}
	if s.MemLimit == 0 || s.PidsLimit == 0 {
		t.Errorf("checker: mem_limit %v, pids_limit %v; want both (every check together)", s.MemLimit, s.PidsLimit)
	}
}

// TestCheckerSeccomp: the checker's profile is Docker's default one with
// pivot_root added for CAP_SYS_ADMIN, nothing else loosened: everything
// not listed fails, and mount, unshare and setns stay behind CAP_SYS_ADMIN.
func TestCheckerSeccomp(t *testing.T) {
	raw, err := os.ReadFile("checker-seccomp.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DefaultAction string `json:"defaultAction"`
		Syscalls      []struct {
			Names    []string `json:"names"`
			Action   string   `json:"action"`
			Comment  string   `json:"comment"`
			Includes struct {
				Caps []string `json:"caps"`
			} `json:"includes"`
		} `json:"syscalls"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Errorf("defaultAction %s, want SCMP_ACT_ERRNO", p.DefaultAction)
	}
	gated := map[string][]string{}
	ours := 0
	for _, sc := range p.Syscalls {
		if strings.HasPrefix(sc.Comment, "ekaci") {
			ours++
		}
		if sc.Action != "SCMP_ACT_ALLOW" {
			continue
		}
		for _, n := range sc.Names {
			gated[n] = append(gated[n], strings.Join(sc.Includes.Caps, ","))
		}
	}
	if ours != 1 {
		t.Errorf("%d rules marked as ekaci's, want 1: pivot_root", ours)
	}
	for _, n := range []string{"pivot_root", "mount", "umount2", "unshare", "setns"} {
		if got := gated[n]; len(got) != 1 || got[0] != "CAP_SYS_ADMIN" {
			t.Errorf("%s allowed for %q, want only with CAP_SYS_ADMIN", n, got)
		}
	}
	for _, n := range []string{"kexec_load", "open_by_handle_at", "init_module", "bpf", "keyctl"} {
		if got := gated[n]; len(got) > 0 && got[0] == "" {
			t.Errorf("%s allowed unconditionally", n)
		}
	}
}
