// Package meshtest runs ekaci's compose mesh (deploy/compose) under a
// project of its own and does to it what a fault test needs: find a
// service's container and published ports, kill, pause, cut off and
// restart it, wait until every service is healthy, and take it all down.
// It shells out to docker and docker-compose (1.29 or v2); every
// container, network and volume it creates carries the project's name and
// goes at Down.
package meshtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Services are the mesh's services, in compose.yaml's order.
var (
	NATS   = []string{"nats-1", "nats-2", "nats-3"}
	Stages = []string{"cache", "gitter", "reader", "evaluator", "ingress", "router", "builder-1", "builder-2", "checker", "recorder", "notifier", "webhook", "admin"}
)

// Mesh is one compose project of the mesh.
type Mesh struct {
	t       testing.TB
	Project string
	files   []string // compose.yaml and overrides
	env     []string // EKACI_* for docker-compose
	// Repos is the directory mounted at /srv/repos (file:///srv/repos/NAME
	// in the gitter).
	Repos string
	// Secret is the webhook's secret.
	Secret string
}

// Config is what a mesh is started with.
type Config struct {
	ComposeFiles []string // deploy/compose/compose.yaml, then overrides
	Project      string   // unique on this engine
	Tag          string   // image tag (EKACI_TAG)
	Dir          string   // where the repos and the webhook secret are kept
}

// New prepares a project (nothing runs yet); Down is registered as a
// cleanup, after the logs of a failed test are written to the test log dir.
func New(t testing.TB, cfg Config) *Mesh {
	t.Helper()
	repos := filepath.Join(cfg.Dir, "repos")
	if err := os.MkdirAll(repos, 0o755); err != nil {
		t.Fatal(err)
	}
	// The stages run as uid 65532: the mounted repositories and the
	// secret must be readable by it.
	for d := cfg.Dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			_ = os.Chmod(d, st.Mode().Perm()|0o005)
		}
	}
	secret := fmt.Sprintf("mesh-secret-%d", time.Now().UnixNano())
	secretFile := filepath.Join(cfg.Dir, "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Mesh{t: t, Project: cfg.Project, files: cfg.ComposeFiles, Repos: repos, Secret: secret,
		env: []string{"EKACI_TAG=" + cfg.Tag, "EKACI_REPOS=" + repos, "EKACI_WEBHOOK_SECRET=" + secretFile,
			// docker-compose 1.29 reads a seccomp profile's path from its
			// working directory, not the file's.
			"EKACI_CHECKER_SECCOMP=" + filepath.Join(filepath.Dir(cfg.ComposeFiles[0]), "checker-seccomp.json"),
			"EKACI_WEBHOOK_ADDR=127.0.0.1:", "EKACI_ADMIN_ADDR=127.0.0.1:", "EKACI_LOG_LEVEL=debug"}}
	t.Cleanup(m.Down)
	return m
}

// Compose runs docker-compose with the project's file, name and
// variables, and returns its standard output.
func (m *Mesh) Compose(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var pre []string
	for _, f := range m.files {
		pre = append(pre, "-f", f)
	}
	cmd := exec.CommandContext(ctx, "docker-compose", append(append(pre, "-p", m.Project), args...)...)
	cmd.Env = append(os.Environ(), m.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker-compose %s: %w: %s", strings.Join(args, " "), err, tail(stderr.String()))
	}
	return stdout.String(), nil
}

// Docker runs docker and returns its standard output.
func Docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, tail(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func (m *Mesh) must(out string, err error) string {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
	return out
}

// Up starts every service and waits until all are healthy.
func (m *Mesh) Up(within time.Duration) {
	m.t.Helper()
	m.must(m.Compose("up", "-d", "--no-build"))
	m.WaitHealthy(within)
}

// Container is the id of service's container.
func (m *Mesh) Container(service string) string {
	m.t.Helper()
	id := strings.TrimSpace(m.must(m.Compose("ps", "-q", service)))
	if id == "" {
		m.t.Fatalf("service %s has no container", service)
	}
	return id
}

// Port is the host address ("127.0.0.1:32771") that service's port is
// published on.
func (m *Mesh) Port(service string, port int) string {
	m.t.Helper()
	return strings.TrimSpace(m.must(m.Compose("port", service, strconv.Itoa(port))))
}

// Health is the health of every service's container by service name
// ("healthy", "starting", "unhealthy", or the state when it is not running).
func (m *Mesh) Health() map[string]string {
	m.t.Helper()
	ids := strings.Fields(m.must(m.Compose("ps", "-q")))
	got := map[string]string{}
	if len(ids) == 0 {
		return got
	}
	out := m.must(Docker(append([]string{"inspect", "-f",
		`{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}`}, ids...)...))
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		st := f[1]
		if st == "running" && len(f) == 3 {
			st = f[2]
		}
		got[f[0]] = st
	}
	return got
}

// WaitHealthy waits until every service of the mesh is running and healthy.
func (m *Mesh) WaitHealthy(within time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(within)
	for {
		h := m.Health()
		var bad []string
		for _, s := range append(append([]string{}, NATS...), Stages...) {
			if h[s] != "healthy" {
				bad = append(bad, s+"="+h[s])
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mesh not healthy within %v: %s", within, strings.Join(bad, " "))
		}
		time.Sleep(time.Second)
	}
}

// Kill stops service's container with SIGKILL, the way an operator's
// `docker kill` does: the restart policy leaves it stopped (Start brings it
// back).
func (m *Mesh) Kill(service string) {
	m.t.Helper()
	m.must(Docker("kill", m.Container(service)))
}

// Crash SIGKILLs service's container from the host (its init, and with it
// every process in it), the way a crash does: the restart policy starts it
// again.
func (m *Mesh) Crash(service string) {
	m.t.Helper()
	pid := m.must(Docker("inspect", "-f", "{{.State.Pid}}", m.Container(service)))
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		m.t.Fatalf("service %s: pid %q", service, pid)
	}
	if err := syscallKill(n); err != nil {
		m.t.Fatalf("kill -9 %d (%s): %v", n, service, err)
	}
}

// Start starts service's stopped container again.
func (m *Mesh) Start(service string) { m.t.Helper(); m.must(m.Compose("start", service)) }

// Restart stops service (SIGTERM, then SIGKILL after grace) and starts it.
func (m *Mesh) Restart(service string, grace time.Duration) {
	m.t.Helper()
	m.must(Docker("restart", "-t", strconv.Itoa(int(grace.Seconds())), m.Container(service)))
}

// Pause freezes every process of service (cgroup freezer): its TCP
// connections stay open and answer nothing.
func (m *Mesh) Pause(service string) { m.t.Helper(); m.must(Docker("pause", m.Container(service))) }

// Unpause thaws service.
func (m *Mesh) Unpause(service string) { m.t.Helper(); m.must(Docker("unpause", m.Container(service))) }

// network is the project's network (compose names it <project>_mesh).
func (m *Mesh) network() string {
	m.t.Helper()
	out := m.must(Docker("network", "ls", "-q", "--filter", "label=com.docker.compose.project="+m.Project,
		"--format", "{{.Name}}"))
	if out == "" || strings.Contains(out, "\n") {
		m.t.Fatalf("project %s: networks %q, want one", m.Project, out)
	}
	return out
}

// Disconnect cuts service off the mesh's network (a partition of that
// node from everything else, its published ports included).
func (m *Mesh) Disconnect(service string) {
	m.t.Helper()
	m.must(Docker("network", "disconnect", m.network(), m.Container(service)))
}

// Connect puts service back on the mesh's network, under its service name.
func (m *Mesh) Connect(service string) {
	m.t.Helper()
	m.must(Docker("network", "connect", "--alias", service, m.network(), m.Container(service)))
}

// Logs is every service's log.
func (m *Mesh) Logs() string {
	out, err := m.Compose("logs", "--no-color", "--timestamps")
	if err != nil {
		return err.Error()
	}
	return out
}

// Down removes the project: containers, networks and volumes. The logs of
// a failed test are kept first, in $EKACI_MESH_LOGS or the temp dir.
func (m *Mesh) Down() {
	if m.t.Failed() {
		dir := os.Getenv("EKACI_MESH_LOGS")
		if dir == "" {
			dir = os.TempDir()
		}
		f := filepath.Join(dir, m.Project+".log")
		if err := os.WriteFile(f, []byte(m.Logs()), 0o644); err == nil {
			m.t.Logf("the mesh's logs: %s", f)
		}
	}
	if _, err := m.Compose("down", "-v", "--remove-orphans", "-t", "2"); err != nil {
		m.t.Errorf("take the mesh down: %v", err)
	}
}
