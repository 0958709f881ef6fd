package membership

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a small DNS server on loopback for the tests: A records
// and SRV records from maps the test changes; NXDOMAIN for the rest.
type dnsServer struct {
	mu   sync.Mutex
	a    map[string][]netip.Addr // name (with the final dot) -> addresses
	srv  map[string][]dnsmessage.SRVResource
	fail bool // answer SERVFAIL
	conn net.PacketConn
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{a: map[string][]netip.Addr{}, srv: map[string][]dnsmessage.SRVResource{}, conn: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n]); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *dnsServer) answer(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil
	}
	question := qs[0]
	name := strings.ToLower(question.Name.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	_, hasA := s.a[name]
	_, hasSRV := s.srv[name]
	switch {
	case s.fail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case !hasA && !hasSRV:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(question)
	b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 1}
	if rh.RCode == dnsmessage.RCodeSuccess {
		switch question.Type {
		case dnsmessage.TypeA:
			for _, ip := range s.a[name] {
				if ip.Is4() {
					b.AResource(rr, dnsmessage.AResource{A: ip.As4()})
				}
			}
		case dnsmessage.TypeSRV:
			for _, r := range s.srv[name] {
				b.SRVResource(rr, r)
			}
		}
	}
	out, _ := b.Finish()
	return out
}

func (s *dnsServer) setA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var as []netip.Addr
	for _, ip := range ips {
		as = append(as, netip.MustParseAddr(ip))
	}
	s.a[name+"."] = as
}

func TestDNSResolver(t *testing.T) {
	dns := startDNS(t)
	server := dns.conn.LocalAddr().String()
	dns.setA("flock.test", "198.51.100.1", "198.51.100.2")
	dns.setA("node3.flock.test", "198.51.100.3")
	dns.mu.Lock()
	dns.srv["_flock._tcp.flock.test."] = []dnsmessage.SRVResource{
		{Target: dnsmessage.MustNewName("node3.flock.test."), Port: 4100, Priority: 1, Weight: 1},
	}
	dns.mu.Unlock()

	ap := func(s ...string) []netip.AddrPort {
		var out []netip.AddrPort
		for _, x := range s {
			out = append(out, netip.MustParseAddrPort(x))
		}
		return out
	}
	tests := []struct {
		name string
		cfg  DNSConfig
		fail bool
		want []netip.AddrPort
		err  bool
	}{
		{"addresses at the port", DNSConfig{Name: "flock.test", Port: 4000}, false, ap("198.51.100.1:4000", "198.51.100.2:4000"), false},
		{"SRV", DNSConfig{Name: "_flock._tcp.flock.test", SRV: true}, false, ap("198.51.100.3:4100"), false},
		{"host:port members", DNSConfig{HostPorts: []string{"node3.flock.test:4000", "198.51.100.9:4001"}}, false, ap("198.51.100.3:4000", "198.51.100.9:4001"), false},
		{"no such name: alone, no error", DNSConfig{Name: "nobody.test", Port: 4000}, false, nil, false},
		{"server failure: an error", DNSConfig{Name: "flock.test", Port: 4000}, true, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dns.mu.Lock()
			dns.fail = tc.fail
			dns.mu.Unlock()
			tc.cfg.Server = server
			got, err := NewDNSResolver(tc.cfg)(context.Background())
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			slices.SortFunc(got, func(a, b netip.AddrPort) int { return a.Compare(b) })
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
