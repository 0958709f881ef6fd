package membership

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/keyring"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// testGossipConfig is gossip on a free loopback port with fast timings.
func testGossipConfig(t *testing.T, kr *keyring.Keyring, seeds ...netip.AddrPort) GossipConfig {
	t.Helper()
	cfg := DefaultGossipConfig()
	cfg.Bind = netip.AddrPortFrom(loopback, 0)
	cfg.Seeds = seeds
	cfg.Frequency = 100 * time.Millisecond
	cfg.DropTime = 800 * time.Millisecond
	cfg.JoinRetry = 50 * time.Millisecond
	cfg.ResolveEvery = 500 * time.Millisecond
	cfg.Keyring = kr
	return cfg
}

func testKeyring(t *testing.T) *keyring.Keyring {
	t.Helper()
	kr, err := keyring.Parse(keyring.Generate())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// gnode is a started gossip service and the events a test read but did not
// want yet.
type gnode struct {
	*Gossip
	backlog []Event
}

var nextPort uint16 = 40000

func startGossip(t *testing.T, cfg GossipConfig, name, domain string) *gnode {
	t.Helper()
	nextPort++
	g, err := NewGossip(Member{Name: name, Domain: domain, Addr: netip.AddrPortFrom(loopback, nextPort)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop(context.Background()) })
	return &gnode{Gossip: g}
}

func (n *gnode) await(t *testing.T, typ EventType, name string) Event {
	t.Helper()
	for i, e := range n.backlog {
		if e.Type == typ && e.Member.Name == name {
			n.backlog = append(n.backlog[:i:i], n.backlog[i+1:]...)
			return e
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-n.Events():
			if !ok {
				t.Fatalf("%s: events closed while awaiting %v %s", n.local.Name, typ, name)
			}
			if e.Type == typ && e.Member.Name == name {
				return e
			}
			n.backlog = append(n.backlog, e)
		case <-timeout:
			t.Fatalf("%s: no %v event for %s; got %v; members %v", n.local.Name, typ, name, n.backlog, n.Members())
		}
	}
}

func TestGossipDerive(t *testing.T) {
	for _, tc := range []struct {
		name                string
		freq, drop          time.Duration
		interval, timeout   time.Duration
		mult                int
		setInterval, setTmo time.Duration
		setMult             int
	}{
		{name: "defaults are memberlist's LAN suspicion", freq: 500 * time.Millisecond, drop: 3 * time.Second, interval: 500 * time.Millisecond, timeout: 250 * time.Millisecond, mult: 4},
		{name: "tight", freq: 100 * time.Millisecond, drop: 800 * time.Millisecond, interval: 100 * time.Millisecond, timeout: 50 * time.Millisecond, mult: 6},
		{name: "minimum multiplier", freq: time.Second, drop: 2 * time.Second, interval: time.Second, timeout: 500 * time.Millisecond, mult: 1},
		{name: "overrides", freq: time.Second, drop: 5 * time.Second, setInterval: 2 * time.Second, setTmo: 300 * time.Millisecond, setMult: 7,
			interval: 2 * time.Second, timeout: 300 * time.Millisecond, mult: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := GossipConfig{Frequency: tc.freq, DropTime: tc.drop, ProbeInterval: tc.setInterval, ProbeTimeout: tc.setTmo, SuspicionMult: tc.setMult}
			got := c.derive()
			if got.probeInterval != tc.interval || got.probeTimeout != tc.timeout || got.suspicionMult != tc.mult {
				t.Errorf("derive = %+v, want %v %v %d", got, tc.interval, tc.timeout, tc.mult)
			}
		})
	}
}

func TestGossipConfigValidate(t *testing.T) {
	kr := testKeyring(t)
	lan := netip.MustParseAddrPort("198.51.100.10:7946")
	for _, tc := range []struct {
		name string
		edit func(*GossipConfig)
		want string // "" for valid
	}{
		{name: "defaults", edit: func(*GossipConfig) {}},
		{name: "lan without key refused", edit: func(c *GossipConfig) { c.Bind = lan }, want: "not loopback, and there is no keyring"},
		{name: "lan with key", edit: func(c *GossipConfig) { c.Bind, c.Keyring = lan, kr }},
		{name: "lan insecure", edit: func(c *GossipConfig) { c.Bind, c.Insecure = lan, true }},
		{name: "advertise lan without key refused", edit: func(c *GossipConfig) { c.Advertise = lan }, want: "not loopback"},
		{name: "unspecified needs advertise", edit: func(c *GossipConfig) { c.Bind = netip.MustParseAddrPort("0.0.0.0:7946") }, want: "needs an advertise address"},
		{name: "unspecified with advertise", edit: func(c *GossipConfig) {
			c.Bind, c.Advertise, c.Keyring = netip.MustParseAddrPort("0.0.0.0:7946"), lan, kr
		}},
		{name: "no bind", edit: func(c *GossipConfig) { c.Bind = netip.AddrPort{} }, want: "bind address is required"},
		{name: "drop time too short", edit: func(c *GossipConfig) { c.DropTime = c.Frequency }, want: ErrDropTime.Error()},
		{name: "probe timeout not below interval", edit: func(c *GossipConfig) { c.ProbeTimeout = time.Second }, want: "need a timeout below the interval"},
		{name: "event buffer", edit: func(c *GossipConfig) { c.EventBuffer = 0 }, want: "event buffer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultGossipConfig()
			tc.edit(&c)
			_, err := NewGossip(Member{Name: "n", Domain: "d", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestGossipMeta(t *testing.T) {
	m := Member{ID: ID{1, 2, 3}, Name: "node1", Domain: "shop", Addr: netip.MustParseAddrPort("198.51.100.10:4000"), Started: time.Unix(1700000000, 42)}
	meta, err := encodeGossipMeta(m, CommandAlive)
	if err != nil {
		t.Fatal(err)
	}
	h, err := decodeGossipMeta(gossipName(m), meta)
	got := h.Member
	if err != nil || h.Command != CommandAlive || got.ID != m.ID || got.Name != m.Name || got.Domain != m.Domain || got.Addr != m.Addr || !got.Started.Equal(m.Started) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	leaving, _ := encodeGossipMeta(m, CommandLeaving)
	if h, err := decodeGossipMeta(gossipName(m), leaving); err != nil || h.Command != CommandLeaving {
		t.Fatalf("leaving: %+v, %v", h, err)
	}
	seq, _ := Heartbeat{Command: CommandAlive, Seq: 3, Member: m}.MarshalBinary()
	other := m
	other.ID = ID{9}
	for _, tc := range []struct {
		name string
		node string
		meta []byte
	}{
		{"empty", gossipName(m), nil},
		{"garbage", gossipName(m), []byte("hello")},
		{"truncated", gossipName(m), meta[:len(meta)-1]},
		{"trailing byte", gossipName(m), append(bytes.Clone(meta), 0)},
		{"too long", gossipName(m), make([]byte, 600)},
		{"sequence", gossipName(m), seq},
		{"another process's name", gossipName(other), meta},
		{"plain name", "node1", meta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeGossipMeta(tc.node, tc.meta); !errors.Is(err, ErrGossipMeta) {
				t.Fatalf("error %v, want ErrGossipMeta", err)
			}
		})
	}
	long := m
	long.Name, long.Domain = strings.Repeat("n", 255), strings.Repeat("d", 255)
	if _, err := encodeGossipMeta(long, CommandAlive); err == nil {
		t.Fatal("metadata past memberlist's limit accepted (memberlist would panic)")
	}
}

func FuzzGossipMeta(f *testing.F) {
	m := Member{ID: ID{1}, Name: "node1", Domain: "default", Addr: netip.MustParseAddrPort("127.0.0.1:4000"), Started: time.Unix(1, 0)}
	meta, _ := encodeGossipMeta(m, CommandAlive)
	f.Add(gossipName(m), meta)
	leaving, _ := encodeGossipMeta(m, CommandLeaving)
	f.Add(gossipName(m), leaving)
	f.Add("x", []byte("FLKB"))
	f.Fuzz(func(t *testing.T, node string, meta []byte) {
		h, err := decodeGossipMeta(node, meta)
		if err != nil {
			if !errors.Is(err, ErrGossipMeta) {
				t.Fatalf("error %v does not wrap ErrGossipMeta", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes, under the same name.
		got := h.Member
		again, err := encodeGossipMeta(got, h.Command)
		if err != nil || !bytes.Equal(again, meta) || gossipName(got) != node {
			t.Fatalf("decoded %+v re-encodes to %x (%v), want %x", got, again, err, meta)
		}
	})
}

// TestGossipJoinLeaveFail runs three keyed nodes: they join through a seed
// list whose first seed is down, see one leave, and see one die (memberlist
// shut down without a leave, as kill -9).
func TestGossipJoinLeaveFail(t *testing.T) {
	leakcheck.Check(t)
	kr := testKeyring(t)
	a := startGossip(t, testGossipConfig(t, kr), "a", "d")
	down := freePort(t)
	b := startGossip(t, testGossipConfig(t, kr, down, a.GossipAddr()), "b", "d")
	c := startGossip(t, testGossipConfig(t, kr, down, a.GossipAddr()), "c", "d")
	for _, n := range []*gnode{a, b, c} {
		for _, o := range []string{"a", "b", "c"} {
			if o != n.local.Name {
				n.await(t, Joined, o)
			}
		}
	}
	if ms := a.Members(); len(ms) != 2 || ms[0].Name != "b" || ms[1].Name != "c" || ms[0].Addr != b.local.Addr {
		t.Fatalf("members of a: %+v", ms)
	}

	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.await(t, Left, "c")
	b.await(t, Left, "c")

	// b dies: its sockets close, nothing is said.
	killed := time.Now()
	b.crash(t)
	e := a.await(t, Failed, "b")
	t.Logf("death detected after %v: %s", time.Since(killed).Round(time.Millisecond), e.Reason)
	if len(a.Members()) != 0 {
		t.Fatalf("a still lists %v", a.Members())
	}
}

// freePort returns a loopback address where nothing listens.
func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// TestGossipWrongKeyRefused: a node with another key cannot join, and the
// node it tries is counting what it refused.
func TestGossipWrongKeyRefused(t *testing.T) {
	leakcheck.Check(t)
	a := startGossip(t, testGossipConfig(t, testKeyring(t)), "a", "d")
	x := startGossip(t, testGossipConfig(t, testKeyring(t), a.GossipAddr()), "x", "d")
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().Refused["forged"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing refused: %+v", a.Stats())
		}
		time.Sleep(20 * time.Millisecond) // a counter cannot be awaited otherwise
	}
	if len(a.Members()) != 0 || len(x.Members()) != 0 {
		t.Fatalf("joined without the key: %v %v", a.Members(), x.Members())
	}
}

// TestGossipDomainsIsolated: another domain's gossip is refused by its
// label, even with the same key.
func TestGossipDomainsIsolated(t *testing.T) {
	leakcheck.Check(t)
	kr := testKeyring(t)
	a := startGossip(t, testGossipConfig(t, kr), "a", "alpha")
	a2 := startGossip(t, testGossipConfig(t, kr, a.GossipAddr()), "a2", "alpha")
	b := startGossip(t, testGossipConfig(t, kr, a.GossipAddr()), "b", "beta")
	a.await(t, Joined, "a2")
	a2.await(t, Joined, "a")
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().ForeignDomain == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("beta's gossip not counted: %+v", a.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(b.Members()) != 0 || len(a.Members()) != 1 || len(a2.Members()) != 1 {
		t.Fatalf("domains mixed: a %v, a2 %v, b %v", a.Members(), a2.Members(), b.Members())
	}
}

// TestGossipNameConflict: a second live process under a taken name is the
// duplicate: it is told by a Conflict event, and the first keeps the name.
func TestGossipNameConflict(t *testing.T) {
	leakcheck.Check(t)
	kr := testKeyring(t)
	first := startGossip(t, testGossipConfig(t, kr), "n", "d")
	other := startGossip(t, testGossipConfig(t, kr, first.GossipAddr()), "o", "d")
	other.await(t, Joined, "n")
	dup := startGossip(t, testGossipConfig(t, kr, first.GossipAddr()), "n", "d")
	e := dup.await(t, Conflict, "n")
	if e.Member.ID != first.local.ID {
		t.Fatalf("conflict names %v, want the first process %v", e.Member, first.local)
	}
	time.Sleep(500 * time.Millisecond) // absence cannot be awaited: give the refusal a few rounds
	for _, m := range other.Members() {
		if m.Name == "n" && m.ID != first.local.ID {
			t.Fatalf("o lists the duplicate: %+v", m)
		}
	}
}

// TestGossipKeyRotation: the ring's rotation reaches memberlist, and a node
// holding only the new key joins.
func TestGossipKeyRotation(t *testing.T) {
	leakcheck.Check(t)
	oldKey, newKey := keyring.Generate(), keyring.Generate()
	kr, _ := keyring.Parse(oldKey)
	a := startGossip(t, testGossipConfig(t, kr), "a", "d")
	dec, _ := keyring.Decode(newKey, oldKey)
	if err := kr.Set(dec...); err != nil {
		t.Fatal(err)
	}
	only, _ := keyring.Parse(newKey)
	b := startGossip(t, testGossipConfig(t, only, a.GossipAddr()), "b", "d")
	b.await(t, Joined, "a")
	a.await(t, Joined, "b")
}

// TestGossipLogs: memberlist's lines reach logrus at their level, and what
// a stranger causes per packet is counted, not logged per packet.
func TestGossipLogs(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	cfg := DefaultGossipConfig()
	cfg.Logger = l
	g, err := NewGossip(Member{Name: "n", Domain: "d", Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &memberlistLog{g: g}
	for range 100 {
		w.Write([]byte("[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=198.51.100.66:7946\n"))
		w.Write([]byte("[DEBUG] memberlist: Stream connection from=198.51.100.66:7946\n"))
	}
	w.Write([]byte("[ERR] memberlist: discarding packet with unacceptable label \"beta\": from=198.51.100.67:7946\n"))
	st := g.Stats()
	if st.Refused["forged"] != 100 || st.ForeignDomain != 1 {
		t.Fatalf("stats %+v", st)
	}
	if n := strings.Count(buf.String(), "refused"); n != 1 {
		t.Fatalf("%d refusal lines logged, want 1 a second:\n%s", n, buf.String())
	}
	if strings.Contains(buf.String(), "Stream connection") {
		t.Fatalf("debug line logged at info:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "198.51.100.66") {
		t.Fatalf("refusal does not name its source:\n%s", buf.String())
	}
}

// crash shuts memberlist down without a goodbye, as kill -9 would.
func (n *gnode) crash(t *testing.T) {
	t.Helper()
	n.runMu.Lock()
	n.crashed = true
	n.runMu.Unlock()
	if err := n.ml.Shutdown(); err != nil {
		t.Fatal(err)
	}
}
