package natstest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NewClusterFromDir starts the JetStream cluster described by the
// nats-*.conf files in dir (deploy/nats), on this machine: each file is
// loaded with nats-server's own parser, then only what cannot work in a
// test is rewritten: hosts become 127.0.0.1, client and monitoring ports
// free ones, route ports free ones with every route pointed at the node
// whose server_name is the route's host name, and each store a fresh
// tb.TempDir(). Everything else (sync_interval, limits, cluster name)
// stays as deployed, so tests exercise the production settings.
//
// It returns once every node is up and the JetStream meta group has a
// leader all nodes follow, and shuts the nodes down at cleanup. The servers
// are in file-name order.
func NewClusterFromDir(tb testing.TB, dir string) []*server.Server {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "nats-*.conf"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("natstest: no nats-*.conf in %s (err %v)", dir, err)
	}
	opts := make([]*server.Options, len(files))
	routePort := make(map[string]int, len(files)) // server_name -> route port
	ports := freePorts(tb, len(files))
	for i, f := range files {
		o, err := server.ProcessConfigFile(f)
		if err != nil {
			tb.Fatalf("natstest: load %s: %v", f, err)
		}
		if o.ServerName == "" {
			tb.Fatalf("natstest: %s has no server_name", f)
		}
		if _, dup := routePort[o.ServerName]; dup {
			tb.Fatalf("natstest: server_name %q appears twice in %s", o.ServerName, dir)
		}
		routePort[o.ServerName] = ports[i]
		opts[i] = o
	}
	for i, o := range opts {
		o.Host = "127.0.0.1"
		o.Port = -1
		if o.HTTPPort != 0 {
			o.HTTPHost = "127.0.0.1"
			o.HTTPPort = -1
		}
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = ports[i]
		routes := make([]*url.URL, 0, len(o.Routes))
		for _, r := range o.Routes {
			p, ok := routePort[r.Hostname()]
			if !ok {
				tb.Fatalf("natstest: %s: route %s names no server of %s (route hosts must be server names)", files[i], r, dir)
			}
			nr := *r
			nr.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
			routes = append(routes, &nr)
		}
		o.Routes = routes
		o.StoreDir = tb.TempDir()
		o.NoSigs = true
		o.NoLog = true
	}

	servers := make([]*server.Server, len(opts))
	for i, o := range opts {
		s, err := server.NewServer(o)
		if err != nil {
			tb.Fatalf("natstest: new server from %s: %v", files[i], err)
		}
		servers[i] = s
		tb.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		go s.Start()
	}
	for i, s := range servers {
		// Generous: three JetStream servers syncing every write start
		// slowly on a loaded 2-core machine (10 s was missed once).
		if !s.ReadyForConnections(30 * time.Second) {
			tb.Fatalf("natstest: %s not ready within 30s", files[i])
		}
	}
	WaitForMetaLeader(tb, servers, 30*time.Second)
	return servers
}

// WaitForMetaLeader polls until exactly one of the running servers leads
// the JetStream meta group and every running server is current with it,
// or fails the test after within. Servers that were shut down are skipped,
// so it also waits out a re-election after a node is stopped.
func WaitForMetaLeader(tb testing.TB, servers []*server.Server, within time.Duration) *server.Server {
	tb.Helper()
	var leader *server.Server
	Eventually(tb, within, func() bool {
		leader = nil
		leaders := 0
		for _, s := range servers {
			if !s.Running() {
				continue
			}
			if !s.JetStreamIsClustered() || !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leader = s
				leaders++
			}
		}
		return leaders == 1
	}, fmt.Sprintf("JetStream meta leader among %d servers", len(servers)))
	return leader
}

// freePorts reserves n distinct free loopback ports and releases them for
// the caller to listen on. Routes must know their peers' ports before the
// peers start, so a random port (-1) cannot be used there; the window in
// which another process could take one is the few milliseconds to start.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	ls := make([]net.Listener, n)
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("natstest: free port: %v", err)
		}
		ls[i] = l
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
