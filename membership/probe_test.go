package membership

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/internal/leakcheck"
)

// fakeProber answers probes as the test says, per address.
type fakeProber struct {
	mu      sync.Mutex
	answers map[netip.AddrPort]Member // absent: the probe fails
	calls   int
}

func (f *fakeProber) Probe(ctx context.Context, addr netip.AddrPort) (Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if m, ok := f.answers[addr]; ok {
		return m, nil
	}
	return Member{}, errors.New("connection refused")
}

func (f *fakeProber) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeProber) set(addr netip.AddrPort, m *Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m == nil {
		delete(f.answers, addr)
	} else {
		f.answers[addr] = *m
	}
}

// A member whose heartbeats stop but whose process answers the probe stays,
// as a suspect; once it stops answering, it fails.
func TestMulticastProbesSilentMembers(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	prober := &fakeProber{answers: map[netip.AddrPort]Member{}}
	cfg.Prober, cfg.ProbeTimeout = prober, 200*time.Millisecond
	a := startNode(t, cfg, "a", "default", 4000)

	ghost := sampleHeartbeat()
	ghost.Member.Name = "ghost"
	prober.set(ghost.Member.Addr, &ghost.Member)
	b := startNode(t, testGroupLike(cfg), "b", "default", 4001)
	pkt, err := ghost.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	_, err = b.conn.WriteTo(pkt, nil, b.dst)
	b.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	await(t, a, Joined, "ghost")

	// Silent past the drop time, but answering: suspect, still a member.
	deadline := time.Now().Add(10 * time.Second)
	for !hasState(a.Members(), "ghost", Suspect) {
		if time.Now().After(deadline) {
			t.Fatalf("ghost never suspect: %v", a.Members())
		}
		time.Sleep(10 * time.Millisecond) // the state change has no event: it is not a membership change
	}
	prober.set(ghost.Member.Addr, nil)
	e := await(t, a, Failed, "ghost")
	if !strings.Contains(e.Reason, "probe failed") {
		t.Errorf("reason %q, want the probe named", e.Reason)
	}
}

// testGroupLike is cfg without the prober: the second node only relays.
func testGroupLike(cfg MulticastConfig) MulticastConfig {
	cfg.Prober = nil
	return cfg
}

func hasState(ms []Status, name string, s State) bool {
	for _, m := range ms {
		if m.Name == name && m.State == s {
			return true
		}
	}
	return false
}

// A failed send makes membership probe the member at once; no answer, no
// member.
func TestSuspectAfterSendFailure(t *testing.T) {
	leakcheck.Check(t)
	cfg := testGroup(t)
	cfg.DropTime = 10 * time.Second // silence alone would take long
	prober := &fakeProber{answers: map[netip.AddrPort]Member{}}
	cfg.Prober, cfg.ProbeTimeout = prober, 200*time.Millisecond
	a := startNode(t, cfg, "a", "default", 4000)
	b := startNode(t, testGroupLike(cfg), "b", "default", 4001)
	await(t, a, Joined, "b")

	start := time.Now()
	a.SuspectAddr(b.Local().Addr)
	e := await(t, a, Failed, "b")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failed %v after the suspicion; the probe should decide at once", d)
	}
	if !strings.Contains(e.Reason, "probe failed") {
		t.Errorf("reason %q", e.Reason)
	}
	// b's heartbeats go on: the same process is back, and says so.
	await(t, a, Rejoined, "b")
}

// awaitStatic reads s's events until one matches, keeping the others in
// backlog for later calls.
func awaitStatic(t *testing.T, s *Static, backlog *[]Event, typ EventType, name string) Event {
	t.Helper()
	for i, e := range *backlog {
		if e.Type == typ && e.Member.Name == name {
			*backlog = append((*backlog)[:i:i], (*backlog)[i+1:]...)
			return e
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-s.Events():
			if e.Type == typ && e.Member.Name == name {
				return e
			}
			*backlog = append(*backlog, e)
		case <-timeout:
			t.Fatalf("no %v %s within 10s; members %v", typ, name, s.Members())
		}
	}
}

func TestStatic(t *testing.T) {
	leakcheck.Check(t)
	self := netip.MustParseAddrPort("127.0.0.1:4000")
	peer := netip.MustParseAddrPort("127.0.0.1:4001")
	other := member("node2", 2, t0)
	other.Addr = peer
	prober := &fakeProber{answers: map[netip.AddrPort]Member{peer: other}}
	cfg := DefaultStaticConfig()
	cfg.Peers = []netip.AddrPort{self, peer}
	cfg.Frequency, cfg.DropTime, cfg.ProbeTimeout = 20*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Prober = prober
	s, err := NewStatic(Member{Name: "node1", Domain: "default", Addr: self}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	var backlog []Event
	awaitStatic(t, s, &backlog, Joined, "node2")

	prober.set(peer, nil) // it stops answering
	start := time.Now()
	e := awaitStatic(t, s, &backlog, Failed, "node2")
	if d := time.Since(start); d < cfg.DropTime-cfg.Frequency {
		t.Errorf("failed after %v, before the drop time %v", d, cfg.DropTime)
	}
	if !strings.Contains(e.Reason, "silent") {
		t.Errorf("reason %q", e.Reason)
	}

	// A node that calls us is a member even when it is not in the list,
	// and its leave removes it at once.
	caller := member("node3", 3, t0)
	s.Observe(caller, false)
	awaitStatic(t, s, &backlog, Joined, "node3")
	s.Observe(caller, true)
	awaitStatic(t, s, &backlog, Left, "node3")

	prober.mu.Lock()
	for addr := range prober.answers {
		if addr == self {
			t.Error("the node pinged itself")
		}
	}
	prober.mu.Unlock()
}

func startStatic(t *testing.T, local Member, prober Prober, peers ...netip.AddrPort) *Static {
	t.Helper()
	cfg := DefaultStaticConfig()
	cfg.Peers = peers
	cfg.Frequency, cfg.DropTime, cfg.ProbeTimeout = 20*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Prober = prober
	s, err := NewStatic(local, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

// TestStaticNameClash: static membership keeps a live member whose name
// another process announces (it answers at its address), takes a process
// whose predecessor's address no longer answers as a restart, and tells a
// node whose listed peer holds its name that it is the duplicate.
func TestStaticNameClash(t *testing.T) {
	leakcheck.Check(t)
	self := netip.MustParseAddrPort("127.0.0.1:4000")
	peer := netip.MustParseAddrPort("127.0.0.1:4001")
	other := at(member("node2", 2, time.Now().Add(-time.Hour)), peer.String())
	prober := &fakeProber{answers: map[netip.AddrPort]Member{peer: other}}
	s := startStatic(t, Member{Name: "node1", Domain: "default", Addr: self}, prober, self, peer)
	var backlog []Event
	awaitStatic(t, s, &backlog, Joined, "node2")

	// A second live node2 calls: refused, node2 answers at its address.
	dup := at(member("node2", 9, time.Now()), "127.0.0.1:4002")
	s.Observe(dup, false)
	for deadline := time.Now().Add(10 * time.Second); s.Stats().NameConflicts == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the duplicate was not refused")
		}
		time.Sleep(10 * time.Millisecond) // a refusal raises no event
	}
	if m := s.Members(); len(m) != 1 || m[0].ID != other.ID {
		t.Fatalf("members %v, want the first node2", m)
	}
	s.Observe(dup, true) // told it is the duplicate, it stops

	// node2 restarts elsewhere: its old address stops answering, and the
	// new run, calling, is node2 at once.
	restarted := at(member("node2", 10, time.Now()), "127.0.0.1:4003")
	prober.set(peer, nil)
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.Observe(restarted, false) // it pings this node every frequency, as static nodes do
		if m := s.Members(); len(m) == 1 && m[0].ID == restarted.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restart never replaced node2: %v", s.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := awaitStatic(t, s, &backlog, Failed, "node2")
	if e.Member.ID != other.ID || !strings.HasPrefix(e.Reason, "restarted as "+shortID(restarted.ID)) {
		t.Errorf("failed %v (%s), want the first node2, restarted", e.Member, e.Reason)
	}

	// A node whose listed peer answers with the node's own name, as a
	// process started before it: it is the duplicate.
	first := at(member("node3", 3, time.Now().Add(-time.Hour)), "127.0.0.1:4005")
	prober.set(first.Addr, &first)
	late := startStatic(t, Member{Name: "node3", Domain: "default", Addr: netip.MustParseAddrPort("127.0.0.1:4006")}, prober, first.Addr)
	var lateBacklog []Event
	c := awaitStatic(t, late, &lateBacklog, Conflict, "node3")
	if c.Member.ID != first.ID || c.Member.Addr != first.Addr {
		t.Errorf("conflict with %v, want %v", c.Member, first)
	}
	if m := late.Members(); len(m) != 0 {
		t.Errorf("the duplicate lists %v", m)
	}
}

func TestNewStaticValidates(t *testing.T) {
	local := Member{Name: "a", Domain: "d", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}
	tests := []struct {
		name string
		edit func(*StaticConfig)
	}{
		{"no prober", func(c *StaticConfig) { c.Prober = nil }},
		{"drop time", func(c *StaticConfig) { c.DropTime = c.Frequency }},
		{"probe timeout", func(c *StaticConfig) { c.ProbeTimeout = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultStaticConfig()
			c.Prober = &fakeProber{}
			tc.edit(&c)
			if _, err := NewStatic(local, c); err == nil {
				t.Error("NewStatic accepted it")
			}
		})
	}
}
