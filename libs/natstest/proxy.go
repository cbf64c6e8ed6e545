package natstest

import (
	"net"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// Proxy forwards TCP connections to a server, and can lose what the server
// says and cut every connection: a test's way to lose acknowledgements and
// drop a client mid-batch at a moment of its choosing. Clients connect to
// URL and reconnect through it after a Cut.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	muted bool
	conns []net.Conn
}

// NewProxy starts a proxy to s on a random loopback port, closed at
// cleanup.
func NewProxy(tb testing.TB, s *server.Server) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("natstest: proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: s.Addr().String()}
	go p.accept()
	tb.Cleanup(func() {
		ln.Close()
		p.Cut()
	})
	return p
}

// URL is the address clients connect to instead of the server's.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Mute drops everything the server sends, on every connection, from now on (acknowledgements, messages, pongs) until Cut: what clients sent
// still reaches the server. Dropped bytes break the protocol stream, so a
// muted connection is good for nothing but a Cut.
func (p *Proxy) Mute() {
	p.mu.Lock()
	p.muted = true
	p.mu.Unlock()
}

// Cut closes every connection now, client and server side, and unmutes:
// clients see a disconnect and reconnect to a proxy that forwards again.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.muted = nil, false
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		srv, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, srv)
		p.mu.Unlock()
		go p.pipe(srv, client, false)
		go p.pipe(client, srv, true)
	}
}

// pipe copies from src to dst until either closes; fromServer bytes are
// dropped while muted.
func (p *Proxy) pipe(dst, src net.Conn, fromServer bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := fromServer && p.muted
			p.mu.Unlock()
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // closed, by either side or by Cut
		}
	}
}
