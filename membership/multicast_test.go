package membership

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
)

// testGroup returns a group and port no other test run uses, on loopback:
// tests never send multicast anywhere but the loopback interface.
func testGroup(t *testing.T) MulticastConfig {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	cfg := DefaultMulticastConfig()
	cfg.Group = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, byte(rand.IntN(256)), byte(1 + rand.IntN(254))}), uint16(port))
	cfg.Interface = netip.MustParseAddr("127.0.0.1")
	cfg.Frequency = 50 * time.Millisecond
	cfg.DropTime = 400 * time.Millisecond
	return cfg
}

// node is a started service plus the events a test read but did not want yet.
type node struct {
	*Multicast
	backlog []Event
}

func startNode(t *testing.T, cfg MulticastConfig, name, domain string, port uint16) *node {
	t.Helper()
	s, err := NewMulticast(Member{Name: name, Domain: domain, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return &node{Multicast: s}
}

// await reads events until one matches, failing the test after a generous
// timeout. Events read past are kept, so awaiting several in any order works.
func await(t *testing.T, s *node, typ EventType, name string) Event {
	t.Helper()
	for i, e := range s.backlog {
		if e.Type == typ && e.Member.Name == name {
			s.backlog = append(s.backlog[:i:i], s.backlog[i+1:]...)
			return e
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-s.Events():
			if !ok {
				t.Fatalf("%s: events closed while waiting for %v %s", s.Local().Name, typ, name)
			}
			if e.Type == typ && e.Member.Name == name {
				return e
			}
			s.backlog = append(s.backlog, e)
		case <-timeout:
			t.Fatalf("%s: no %v %s within 10s; members %v", s.Local().Name, typ, name, s.Members())
		}
	}
}

func TestMulticastMembersSeeEachOther(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	a := startNode(t, cfg, "a", "default", 4000)
	b := startNode(t, cfg, "b", "default", 4001)
	c := startNode(t, cfg, "c", "default", 4002)
	other := startNode(t, cfg, "x", "elsewhere", 4003)

	for _, s := range []*node{a, b, c} {
		for _, peer := range []*node{a, b, c} {
			if peer != s {
				e := await(t, s, Joined, peer.Local().Name)
				if e.Member.ID != peer.Local().ID || e.Member.Addr != peer.Local().Addr {
					t.Errorf("%s saw %s as %+v, want %+v", s.Local().Name, peer.Local().Name, e.Member, peer.Local())
				}
			}
		}
	}
	got := a.Members()
	if len(got) != 2 || got[0].Name != "b" || got[1].Name != "c" || got[0].State != Alive {
		t.Errorf("a.Members() = %+v, want b and c alive", got)
	}
	if m := other.Members(); len(m) != 0 {
		t.Errorf("domain %q sees %v", "elsewhere", m)
	}
	// x heartbeats every interval; a must see them and ignore them.
	for deadline := time.Now().Add(10 * time.Second); a.Stats().ForeignDomain == 0; {
		if time.Now().After(deadline) {
			t.Fatal("a counted no heartbeats of the other domain")
		}
		time.Sleep(10 * time.Millisecond) // ignoring a packet raises no event to wait for
	}
	if m := a.Members(); len(m) != 2 {
		t.Errorf("a lists %v after hearing the other domain", m)
	}

	// A clean stop is a Left at once, far sooner than the drop time.
	stopped := time.Now()
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	await(t, a, Left, "c")
	if d := time.Since(stopped); d > cfg.DropTime {
		t.Errorf("left reported after %v, not before the drop time %v", d, cfg.DropTime)
	}
	if _, ok := <-c.Events(); ok {
		t.Error("events of a stopped service still open")
	}
}

func TestMulticastSilentMemberFails(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	a := startNode(t, cfg, "a", "default", 4000)

	// A member that crashes sends no leave: play one by hand, then go quiet.
	ghost := sampleHeartbeat()
	ghost.Member.Name = "ghost"
	pkt, err := ghost.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Sent through a service's socket, which is bound to loopback: a plain
	// socket would pick the default interface, which flock must never do.
	b := startNode(t, cfg, "b", "default", 4001)
	// Taken before the write: a can receive the heartbeat before the
	// write returns.
	sent := time.Now()
	b.mu.Lock()
	_, err = b.conn.WriteTo(pkt, nil, b.dst)
	b.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	await(t, a, Joined, "ghost")
	e := await(t, a, Failed, "ghost")
	if d := e.Time.Sub(sent); d < cfg.DropTime {
		t.Errorf("failed after %v, before the drop time %v", d, cfg.DropTime)
	}
	for _, m := range a.Members() {
		if m.Name == "ghost" {
			t.Errorf("failed member still listed: %+v", m)
		}
	}
}

func TestMulticastRestartIsANewMember(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	a := startNode(t, cfg, "a", "default", 4000)
	first := startNode(t, cfg, "b", "default", 4001)
	await(t, a, Joined, "b")

	// Crash: drop the socket without a leave by stopping the service after
	// closing its connection (the leave then fails to send).
	first.mu.Lock()
	first.conn.Close()
	first.mu.Unlock()
	first.Stop(context.Background())

	second := startNode(t, cfg, "b", "default", 4001)
	var failed, joined Event
	for failed.Type == 0 || joined.Type == 0 {
		select {
		case e := <-a.Events():
			switch {
			case e.Type == Failed && e.Member.ID == first.Local().ID:
				failed = e
			case e.Type == Joined && e.Member.ID == second.Local().ID:
				joined = e
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no failed+joined for the restart; members %v", a.Members())
		}
	}
	// The reason used to be exactly "restarted as <id>"; it now also says
	// how the old run was shown gone (here: the new run announces its
	// address).
	if !strings.HasPrefix(failed.Reason, "restarted as "+shortID(second.Local().ID)+" (") {
		t.Errorf("reason %q: want the restart named", failed.Reason)
	}
	if m := a.Members(); len(m) != 1 || m[0].ID != second.Local().ID {
		t.Errorf("members %v, want only the new run of b", m)
	}
}

func TestMulticastStartErrors(t *testing.T) {
	cfg := testGroup(t)
	tests := []struct {
		name string
		edit func(*MulticastConfig)
	}{
		{"no interface has the address", func(c *MulticastConfig) { c.Interface = netip.MustParseAddr("198.51.100.254") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.edit(&c)
			s, err := NewMulticast(Member{Name: "a", Domain: "d", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err == nil {
				s.Stop(context.Background())
				t.Fatal("Start succeeded")
			} else {
				t.Log(err)
			}
		})
	}
}

func TestNewMulticastValidates(t *testing.T) {
	good := Member{Name: "a", Domain: "d", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}
	tests := []struct {
		name   string
		member Member
		edit   func(*MulticastConfig)
	}{
		{"unicast group", good, func(c *MulticastConfig) { c.Group = netip.MustParseAddrPort("10.0.0.1:45564") }},
		{"ipv6 group", good, func(c *MulticastConfig) { c.Group = netip.MustParseAddrPort("[ff02::1]:45564") }},
		{"port zero", good, func(c *MulticastConfig) { c.Group = netip.MustParseAddrPort("228.0.0.4:0") }},
		{"no interface", good, func(c *MulticastConfig) { c.Interface = netip.Addr{} }},
		{"ttl", good, func(c *MulticastConfig) { c.TTL = 256 }},
		{"drop time", good, func(c *MulticastConfig) { c.DropTime = c.Frequency }},
		{"no name", Member{Domain: "d", Addr: good.Addr}, func(*MulticastConfig) {}},
		{"no address", Member{Name: "a", Domain: "d"}, func(*MulticastConfig) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultMulticastConfig()
			tc.edit(&c)
			if _, err := NewMulticast(tc.member, c); err == nil {
				t.Error("NewMulticast accepted it")
			}
		})
	}
}

func ExampleMulticast() {
	cfg := DefaultMulticastConfig() // 228.0.0.4:45564 on 127.0.0.1
	s, err := NewMulticast(Member{Name: "node1", Domain: "default", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Local().Name)
	// Output: node1
}

// TestMulticastDuplicateNameRefused: a second live process with a member's
// name does not replace it while the first answers its probe; the second
// is told it is the duplicate (and the first is not); once the first
// leaves, the second takes the name at once.
func TestMulticastDuplicateNameRefused(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	prober := &fakeProber{answers: map[netip.AddrPort]Member{}}
	cfg.Prober, cfg.ProbeTimeout = prober, 200*time.Millisecond
	a := startNode(t, cfg, "a", "default", 4000)
	b1 := startNode(t, testGroupLike(cfg), "b", "default", 4001)
	b1Local := b1.Local()
	prober.set(b1Local.Addr, &b1Local) // b1 is alive and answers
	await(t, a, Joined, "b")

	b2 := startNode(t, testGroupLike(cfg), "b", "default", 4002) // started later
	e := await(t, b2, Conflict, "b")
	if e.Member.ID != b1Local.ID || e.Member.Addr != b1Local.Addr {
		t.Errorf("b2 told of %v, want b1 %v", e.Member, b1Local)
	}
	// a probes b1, keeps it and refuses b2; b1 hears b2 too and ignores it.
	for deadline := time.Now().Add(10 * time.Second); a.Stats().NameConflicts == 0 || b1.Stats().NameConflicts == 0 || prober.count() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal counted: a %+v, b1 %+v, probes %d", a.Stats(), b1.Stats(), prober.count())
		}
		time.Sleep(10 * time.Millisecond) // a refused heartbeat raises no event
	}
	if m := a.Members(); len(m) != 1 || m[0].ID != b1Local.ID {
		t.Errorf("a lists %v, want b1 alone", m)
	}
	for _, n := range []*node{a, b1} {
		for drained := false; !drained; {
			select {
			case e := <-n.Events():
				n.backlog = append(n.backlog, e)
			default:
				drained = true
			}
		}
		for _, e := range n.backlog {
			if e.Type == Conflict || e.Type == Failed {
				t.Errorf("%s: unexpected %v %v (%s)", n.Local().Name, e.Type, e.Member, e.Reason)
			}
		}
	}

	// The first leaves: the name is free, and b2 has it at once.
	if err := b1.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	left := await(t, a, Left, "b")
	joined := await(t, a, Joined, "b")
	if left.Member.ID != b1Local.ID || joined.Member.ID != b2.Local().ID {
		t.Errorf("left %v, joined %v; want b1 left and b2 joined", left.Member, joined.Member)
	}
}
