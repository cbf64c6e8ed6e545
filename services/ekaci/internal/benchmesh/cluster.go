package benchmesh

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cluster is the JetStream cluster of deploy/nats as host processes on
// loopback.
type cluster struct {
	nodes   []*proc
	urls    []string // each node's client URL
	version string   // nats-server --version
}

// URL lists every node, as a stage's --nats-url does in a mesh.
func (c *cluster) URL() string { return strings.Join(c.urls, ",") }

// startCluster starts one nats-server per nats-*.conf in confDir, each
// with its files as deployed and only what cannot work on one host
// changed: client, monitoring and route ports on 127.0.0.1 and the routes
// pointed at those ports, by flags (nats-server's flags win over its
// file), and the store under dir, in a copy of the files (the server
// refuses a store_dir given both ways). sync_interval, limits and the
// cluster name stay as deployed. It returns once JetStream answers (a
// meta leader was elected).
func startCluster(ctx context.Context, natsServer, confDir, dir string, exited func(error)) (*cluster, error) {
	files, err := filepath.Glob(filepath.Join(confDir, "nats-*.conf"))
	if err != nil || len(files) != 3 {
		return nil, fmt.Errorf("want the 3 nats-*.conf of a cluster in %s, found %d (err %v)", confDir, len(files), err)
	}
	out, err := exec.Command(natsServer, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w: %s", natsServer, err, out)
	}
	c := &cluster{version: strings.TrimSpace(string(out))}
	ports, err := freePorts(3 * len(files))
	if err != nil {
		return nil, err
	}
	routes := make([]string, len(files))
	for i := range files {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[2*len(files)+i])
	}
	for i, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".conf")
		client, monitor, route := ports[i], ports[len(files)+i], ports[2*len(files)+i]
		conf, err := copyConf(f, filepath.Join(dir, name))
		if err != nil {
			c.stop()
			return nil, err
		}
		p, err := start(dir, name, natsServer, []string{
			"-c", conf, "-a", "127.0.0.1", "-p", fmt.Sprint(client), "-m", fmt.Sprint(monitor),
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", route), "--routes", strings.Join(routes, ","),
		}, exited)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, p)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", client))
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = poll(wctx, "a JetStream meta leader", 250*time.Millisecond, func() (bool, error) {
		nc, err := nats.Connect(c.URL(), nats.Timeout(2*time.Second))
		if err != nil {
			return false, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false, err
		}
		actx, cancel := context.WithTimeout(wctx, 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(actx)
		return err == nil, err
	})
	if err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// storeDir is common.conf's store_dir line.
var storeDir = regexp.MustCompile(`(?m)^(\s*)store_dir:.*$`)

// copyConf copies the node's file and the common.conf it includes into
// dir, with common.conf's store_dir set to dir/store, and returns the
// copy of the node's file.
func copyConf(nodeFile, dir string) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o750); err != nil {
		return "", err
	}
	node, err := os.ReadFile(nodeFile)
	if err != nil {
		return "", err
	}
	common, err := os.ReadFile(filepath.Join(filepath.Dir(nodeFile), "common.conf"))
	if err != nil {
		return "", err
	}
	if n := len(storeDir.FindAll(common, -1)); n != 1 {
		return "", fmt.Errorf("common.conf next to %s: %d store_dir lines, want 1", nodeFile, n)
	}
	common = storeDir.ReplaceAll(common, []byte(fmt.Sprintf("${1}store_dir: %q", filepath.Join(dir, "store"))))
	if err := os.WriteFile(filepath.Join(dir, "common.conf"), common, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(nodeFile))
	return out, os.WriteFile(out, node, 0o644)
}

// stop stops every node (lame duck is not needed: nothing runs anymore).
func (c *cluster) stop() error {
	var errs []string
	for _, n := range c.nodes {
		if err := n.stop(30 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop the cluster: %s", strings.Join(errs, "; "))
	}
	return nil
}
