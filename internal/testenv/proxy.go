package testenv

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Outage is a TCP proxy in front of a server that a test can take down and
// bring back on the same address, to show what the server's clients do
// while it is unreachable: connections in use are cut, new ones refused.
type Outage struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

// NewOutage proxies to target (host:port) until t ends.
func NewOutage(t testing.TB, target string) *Outage {
	t.Helper()
	o := &Outage{target: target, conns: map[net.Conn]bool{}}
	if err := o.listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Down)
	return o
}

// ThroughProxy rewrites the host of a URL to the proxy's address.
func (o *Outage) ThroughProxy(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	u.Host = o.addr
	return u.String()
}

// Down cuts every proxied connection and refuses new ones.
func (o *Outage) Down() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln != nil {
		o.ln.Close()
		o.ln = nil
	}
	for c := range o.conns {
		c.Close()
	}
	clear(o.conns)
}

// Up accepts connections again on the same address.
func (o *Outage) Up() error { return o.listen(o.addr) }

func (o *Outage) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.ln, o.addr = ln, ln.Addr().String()
	o.mu.Unlock()
	go o.accept(ln)
	return nil
}

func (o *Outage) accept(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", o.target)
		if err != nil {
			client.Close()
			continue
		}
		o.mu.Lock()
		if o.ln != ln { // went down meanwhile
			o.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		o.conns[client], o.conns[server] = true, true
		o.mu.Unlock()
		go pipe(client, server)
		go pipe(server, client)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}
