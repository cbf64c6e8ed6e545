// Package k8s_test checks deploy/k8s offline: every manifest decoded
// strictly into k8s.io/api types, and the invariants a cluster would only
// show at run time (kubectl --dry-run, kubeconform and kind all need a
// network or an image this project cannot fetch).
package k8s_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/conf"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// objects are the decoded manifests, by kind.
type objects struct {
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	pdbs         []*policyv1.PodDisruptionBudget
}

// kustomization is the part of kustomization.yaml the test reads.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Labels     []any    `json:"labels"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name   string `json:"name"`
		NewTag string `json:"newTag"`
	} `json:"images"`
}

// load decodes every document of every resource kustomization.yaml
// lists, strictly: an unknown or misspelt field fails.
func load(t *testing.T) (objects, kustomization) {
	t.Helper()
	var k kustomization
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not a resource of kustomization.yaml", f)
		}
	}
	var o objects
	for _, f := range k.Resources {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			var meta struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var into any
			switch meta.Kind {
			case "StatefulSet":
				v := &appsv1.StatefulSet{}
				o.statefulSets, into = append(o.statefulSets, v), v
			case "Deployment":
				v := &appsv1.Deployment{}
				o.deployments, into = append(o.deployments, v), v
			case "Service":
				v := &corev1.Service{}
				o.services, into = append(o.services, v), v
			case "ConfigMap":
				v := &corev1.ConfigMap{}
				o.configMaps, into = append(o.configMaps, v), v
			case "PodDisruptionBudget":
				v := &policyv1.PodDisruptionBudget{}
				o.pdbs, into = append(o.pdbs, v), v
			default:
				t.Fatalf("%s document %d: kind %q is not one this test knows", f, i, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, meta.Kind, err)
			}
		}
	}
	return o, k
}

// workload is a StatefulSet or Deployment seen the same way.
type workload struct {
	kind, name string
	replicas   int32
	selector   map[string]string
	template   corev1.PodTemplateSpec
}

func (o objects) workloads() []workload {
	var ws []workload
	for _, s := range o.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, *s.Spec.Replicas, s.Spec.Selector.MatchLabels, s.Spec.Template})
	}
	for _, d := range o.deployments {
		ws = append(ws, workload{"Deployment", d.Name, *d.Spec.Replicas, d.Spec.Selector.MatchLabels, d.Spec.Template})
	}
	return ws
}

func TestManifestsDecodeStrictly(t *testing.T) {
	o, k := load(t)
	if len(o.statefulSets) == 0 || len(o.deployments) == 0 || len(o.services) == 0 {
		t.Fatalf("decoded %d StatefulSets, %d Deployments, %d Services", len(o.statefulSets), len(o.deployments), len(o.services))
	}
	if k.Namespace == "" {
		t.Error("kustomization.yaml sets no namespace")
	}
	images := map[string]bool{}
	for _, img := range k.Images {
		images[img.Name] = true
	}
	for _, w := range o.workloads() {
		for _, c := range w.template.Spec.Containers {
			if !images[c.Image] {
				t.Errorf("%s/%s container %s: image %q is not set by kustomization.yaml's images", w.kind, w.name, c.Name, c.Image)
			}
		}
	}
	// And strictness holds: a misspelt field is refused.
	bad := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1, replica: 2}\n")
	if err := yaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil {
		t.Fatal("UnmarshalStrict accepted an unknown field")
	}
}

func TestSelectorsMatchLabels(t *testing.T) {
	o, _ := load(t)
	ws := o.workloads()
	for _, w := range ws {
		if len(w.selector) == 0 || !labels.SelectorFromSet(w.selector).Matches(labels.Set(w.template.Labels)) {
			t.Errorf("%s/%s: selector %v does not select its template's labels %v", w.kind, w.name, w.selector, w.template.Labels)
		}
	}
	selects := func(sel map[string]string) []workload {
		var got []workload
		for _, w := range ws {
			if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(w.template.Labels)) {
				got = append(got, w)
			}
		}
		return got
	}
	for _, s := range o.services {
		got := selects(s.Spec.Selector)
		if len(got) == 0 {
			t.Errorf("Service %s selects no pod template", s.Name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type == intstr.String && !hasPort(got, p.TargetPort.StrVal) {
				t.Errorf("Service %s: target port %q is no container port of the pods it selects", s.Name, p.TargetPort.StrVal)
			}
		}
	}
	for _, p := range o.pdbs {
		if len(selects(p.Spec.Selector.MatchLabels)) == 0 {
			t.Errorf("PodDisruptionBudget %s selects nothing", p.Name)
		}
	}
	headless := map[string]bool{}
	for _, s := range o.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			headless[s.Name] = true
		}
	}
	for _, s := range o.statefulSets {
		if !headless[s.Spec.ServiceName] {
			t.Errorf("StatefulSet %s: serviceName %q is not a headless Service", s.Name, s.Spec.ServiceName)
		}
	}
}

func hasPort(ws []workload, name string) bool {
	for _, w := range ws {
		for _, c := range w.template.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == name {
					return true
				}
			}
		}
	}
	return false
}

func TestProbesAndSecurity(t *testing.T) {
	o, _ := load(t)
	for _, w := range o.workloads() {
		spec := w.template.Spec
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
			t.Errorf("%s/%s: pod security context %+v, want runAsNonRoot as uid 65532", w.kind, w.name, sc)
		}
		emptyDirs := map[string]bool{}
		for _, v := range spec.Volumes {
			if v.EmptyDir != nil {
				emptyDirs[v.Name] = true
			}
		}
		for _, c := range spec.Containers {
			where := fmt.Sprintf("%s/%s container %s", w.kind, w.name, c.Name)
			ports := map[string]bool{}
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
			for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				if p == nil {
					if kind != "startup" {
						t.Errorf("%s: no %s probe", where, kind)
					}
					continue
				}
				if p.HTTPGet == nil || p.HTTPGet.Port.Type != intstr.String || !ports[p.HTTPGet.Port.StrVal] {
					t.Errorf("%s: %s probe %+v is not an HTTP GET on a named port of the container", where, kind, p.ProbeHandler)
				}
			}
			if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.Name != "nats" && c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness on %s, want /healthz", where, c.LivenessProbe.HTTPGet.Path)
			}
			if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.Name != "nats" && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness on %s, want /readyz", where, c.ReadinessProbe.HTTPGet.Path)
			}
			sc := c.SecurityContext
			if c.Name == "checker" {
				checkerSecurity(t, where, sc)
			} else if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil && *sc.Privileged || sc.RunAsUser != nil && *sc.RunAsUser != 65532 ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: security context %+v, want non-root, read-only root filesystem, no privilege escalation, every capability dropped", where, sc)
			}
			tmp := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == "/tmp" && emptyDirs[m.Name] {
					tmp = true
				}
			}
			if !tmp {
				t.Errorf("%s: no emptyDir on /tmp (the root filesystem is read-only)", where)
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: resources %+v, want cpu and memory requests and a memory limit", where, c.Resources)
			}
			gomem := false
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
					gomem = true
				}
			}
			if !gomem {
				t.Errorf("%s: GOMEMLIMIT does not come from limits.memory", where)
			}
		}
	}
}

// checkerSecurity: the checker is the one container with privileges, and
// has exactly those its comment lists (README says why): root with every
// capability dropped but the sandbox's, never privileged, a read-only root
// filesystem, the seccomp profile of deploy/compose installed on the node.
func checkerSecurity(t *testing.T, where string, sc *corev1.SecurityContext) {
	t.Helper()
	want := []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN", "SYS_PTRACE"}
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("%s: security context %+v, want one with capabilities", where, sc)
	}
	added := slices.Sorted(slices.Values(sc.Capabilities.Add))
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(added, want) {
		t.Errorf("%s: security context %+v, want root, not privileged, a read-only root filesystem, ALL dropped and %v added", where, sc, want)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost || sc.SeccompProfile.LocalhostProfile == nil ||
		!strings.HasSuffix(*sc.SeccompProfile.LocalhostProfile, "checker-seccomp.json") {
		t.Errorf("%s: seccomp %+v, want the Localhost profile checker-seccomp.json", where, sc.SeccompProfile)
	}
	if _, err := os.Stat("../compose/checker-seccomp.json"); err != nil {
		t.Errorf("%s: the seccomp profile to install: %v", where, err)
	}
}

func TestSingleWriters(t *testing.T) {
	o, _ := load(t)
	kinds := map[string]workload{}
	for _, w := range o.workloads() {
		kinds[w.name] = w
	}
	for _, name := range []string{"ingress", "recorder", "checkout", "cache", "admin"} {
		w, ok := kinds[name]
		if !ok || w.kind != "StatefulSet" || w.replicas != 1 {
			t.Errorf("%s: %s with %d replicas, want a StatefulSet of 1 (a single writer of its volume)", name, w.kind, w.replicas)
		}
	}
	for _, s := range o.statefulSets {
		if s.Name == "nats" {
			continue
		}
		for _, c := range s.Spec.Template.Spec.Containers {
			if c.Name == "builder" && len(s.Spec.VolumeClaimTemplates) == 0 {
				t.Errorf("builders have no volume of their own")
			}
		}
	}
}

// flags is every EKACI_* variable each stage binary accepts, read from
// its own -h (flagenv lists each flag's variable there).
var flags = sync.OnceValues(func() (map[string]map[string]bool, error) {
	dir, err := os.MkdirTemp("", "ekaci-k8s-flags")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pkgs := []string{"../../services/cache/cmd/ekaci-cache"}
	for _, s := range []string{"gitter", "reader", "evaluator", "ingress", "router", "builder", "checker", "recorder", "notifier", "webhook", "admin"} {
		pkgs = append(pkgs, "../../services/"+s+"/cmd/ekaci-"+s)
	}
	if out, err := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v: %s", err, out)
	}
	vars := regexp.MustCompile(`EKACI_[A-Z0-9_]+`)
	got := map[string]map[string]bool{}
	for _, p := range pkgs {
		bin := filepath.Base(p)
		out, _ := exec.Command(filepath.Join(dir, bin), "-h").CombinedOutput()
		got[bin] = map[string]bool{}
		for _, v := range vars.FindAllString(string(out), -1) {
			got[bin][v] = true
		}
		if len(got[bin]) == 0 {
			return nil, fmt.Errorf("%s -h names no EKACI_ variable: %s", bin, out)
		}
	}
	return got, nil
})

func TestEnvNamesRealFlags(t *testing.T) {
	o, _ := load(t)
	known, err := flags()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, w := range o.workloads() {
		for _, c := range w.template.Spec.Containers {
			if len(c.Command) == 0 || c.Name == "nats" {
				continue
			}
			bin := filepath.Base(c.Command[0])
			vars, ok := known[bin]
			if !ok {
				t.Errorf("%s/%s container %s runs %s, not a stage binary", w.kind, w.name, c.Name, bin)
				continue
			}
			for _, e := range c.Env {
				if !strings.HasPrefix(e.Name, "EKACI_") {
					continue
				}
				checked++
				if !vars[e.Name] {
					t.Errorf("%s/%s container %s: %s is no flag of %s", w.kind, w.name, c.Name, e.Name, bin)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no EKACI_ variable checked")
	}
	if known["ekaci-builder"]["EKACI_NO_SUCH_FLAG"] {
		t.Fatal("the flag list accepts anything")
	}
}

// parse reads a NATS configuration with nats-server's own parser.
func parse(t *testing.T, path string) map[string]any {
	t.Helper()
	m, err := conf.ParseFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func TestNATSConfigMatchesDeployNATS(t *testing.T) {
	o, _ := load(t)
	var cm *corev1.ConfigMap
	for _, c := range o.configMaps {
		if c.Name == "nats-config" {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no nats-config ConfigMap")
	}
	f := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(f, []byte(cm.Data["nats.conf"]), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "nats-2")
	k8s := parse(t, f)
	compose := parse(t, "../nats/nats-2.conf")
	if k8s["server_name"] != "nats-2" {
		t.Errorf("server_name %v, want the pod's name", k8s["server_name"])
	}
	for _, key := range []string{"listen", "http_port", "max_payload", "lame_duck_duration", "jetstream"} {
		if fmt.Sprint(k8s[key]) != fmt.Sprint(compose[key]) {
			t.Errorf("%s: %v in the ConfigMap, %v in deploy/nats", key, k8s[key], compose[key])
		}
	}
	kc, cc := k8s["cluster"].(map[string]any), compose["cluster"].(map[string]any)
	for _, key := range []string{"name", "listen"} {
		if fmt.Sprint(kc[key]) != fmt.Sprint(cc[key]) {
			t.Errorf("cluster.%s: %v in the ConfigMap, %v in deploy/nats", key, kc[key], cc[key])
		}
	}
	var sts *appsv1.StatefulSet
	for _, s := range o.statefulSets {
		if s.Name == "nats" {
			sts = s
		}
	}
	if sts == nil || *sts.Spec.Replicas != 3 || sts.Spec.Ordinals == nil {
		t.Fatalf("nats StatefulSet %+v, want 3 replicas with ordinals", sts)
	}
	var want []string
	for i := range 3 {
		want = append(want, fmt.Sprintf("nats-route://%s-%d.%s:6222", sts.Name, int(sts.Spec.Ordinals.Start)+i, sts.Spec.ServiceName))
	}
	if got := fmt.Sprint(kc["routes"]); got != fmt.Sprint(want) {
		t.Errorf("routes %s, want the pods through the headless service %v", got, want)
	}
	var headless *corev1.Service
	for _, s := range o.services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		}
	}
	if headless == nil || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: want a headless service publishing not-ready addresses (routes before readiness)", sts.Spec.ServiceName)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.StartupProbe, "/healthz"}, {c.ReadinessProbe, "/healthz?js-server-only=true"}, {c.LivenessProbe, "/healthz?js-enabled-only=true"}} {
		if p.probe == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("nats probe %+v, want %s", p.probe, p.path)
		}
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(c.Lifecycle.PreStop.Exec.Command, " "), "ldm="+fmt.Sprint(k8s["pid_file"])) {
		t.Errorf("nats preStop %+v, want lame-duck mode through pid_file %v", c.Lifecycle, k8s["pid_file"])
	}
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Error("nats has no PVC per pod")
	}
	pdb := false
	for _, p := range o.pdbs {
		if p.Spec.MaxUnavailable != nil && p.Spec.MaxUnavailable.IntValue() == 1 && labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(labels.Set(sts.Spec.Template.Labels)) {
			pdb = true
		}
	}
	if !pdb {
		t.Error("no PodDisruptionBudget with maxUnavailable 1 for nats")
	}
}
