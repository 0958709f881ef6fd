package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/membership"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// testGroup is a group and port no other run uses. Tests send multicast on
// the loopback interface only.
func testGroup(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, byte(rand.IntN(256)), byte(1 + rand.IntN(254))}), uint16(port))
}

// startMember runs a real multicast membership service on loopback.
func startMember(t *testing.T, group netip.AddrPort, name, domain string, port uint16) *membership.Multicast {
	t.Helper()
	cfg := membership.DefaultMulticastConfig()
	cfg.Group = group
	cfg.Interface = loopback
	cfg.Frequency = 50 * time.Millisecond
	m, err := membership.NewMulticast(membership.Member{Name: name, Domain: domain, Addr: netip.AddrPortFrom(loopback, port)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	return m
}

// loopbackSender returns a socket bound to 127.0.0.1 whose multicast goes
// out on the loopback interface, never the default one.
func loopbackSender(t *testing.T) *ipv4.PacketConn {
	t.Helper()
	lo, err := membership.InterfaceByAddr(loopback)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := ipv4.NewPacketConn(c)
	if err := p.SetMulticastInterface(lo); err != nil {
		t.Fatalf("set multicast interface %s: %v", lo.Name, err)
	}
	if err := p.SetMulticastTTL(0); err != nil { // not past this host either way
		t.Fatal(err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListen(t *testing.T) {
	leakcheck.Check(t)
	group := testGroup(t)
	stays := startMember(t, group, "node7", "shop", 4700)
	leaves := startMember(t, group, "node8", "", 4800)
	garbage := loopbackSender(t)

	var stdout, stderr bytes.Buffer
	code := -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		code = run(context.Background(), []string{"listen", "--bind", "127.0.0.1", "--address", group.Addr().String(),
			"--port", strconv.Itoa(int(group.Port())), "--for", "1s"}, &stdout, &stderr)
	}()

	// Packets that are not heartbeats, until listen ends; node8 leaves
	// half-way.
	dst := net.UDPAddrFromAddrPort(group)
	leave := time.After(500 * time.Millisecond)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-tick.C:
			if _, err := garbage.WriteTo([]byte("GET / HTTP/1.0\r\n\r\n"), nil, dst); err != nil {
				t.Errorf("send garbage: %v", err)
			}
		case <-leave:
			if err := leaves.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		case <-done:
			break wait
		}
	}

	out := stdout.String()
	if code != exitOK || stderr.Len() > 0 {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr.String(), out)
	}
	t.Logf("output:\n%s", out)
	if want := "listening to " + group.String() + " on lo (127.0.0.1) for 1s, sending nothing\n"; !strings.HasPrefix(out, want) {
		t.Errorf("first line is not %q", want)
	}
	id7, id8 := stays.Local().ID.String()[:8], leaves.Local().ID.String()[:8]
	for _, want := range []*regexp.Regexp{
		// News lines, as the members are first heard. "from" is the
		// source the kernel chose, not necessarily 127.0.0.1.
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3}  new      node7  domain shop  address 127\.0\.0\.1:4700  id ` + id7 + `  from \S+  alive$`),
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3}  new      node8  domain -  address 127\.0\.0\.1:4800  id ` + id8 + `  from \S+  alive$`),
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3}  leaving  node8  `),
		// The final table.
		regexp.MustCompile(`(?m)^NAME +DOMAIN +ADDRESS +ID +AGE +CMD$`),
		regexp.MustCompile(`(?m)^node7 +shop +127\.0\.0\.1:4700 +` + id7 + ` +0\.\ds +alive$`),
		regexp.MustCompile(`(?m)^node8 +- +127\.0\.0\.1:4800 +` + id8 + ` +0\.\ds +leaving$`),
		regexp.MustCompile(`(?m)^\d+ heartbeats from 2 members$`),
		regexp.MustCompile(`(?m)^\d+ packets? ignored: not flock heartbeats$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output does not match %s", want)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("escape sequences in output that is not a terminal")
	}
}

// Without --for, listen runs until its context ends (a signal in main),
// then prints the final table and exits 0.
func TestListenUntilCanceled(t *testing.T) {
	leakcheck.Check(t)
	group := testGroup(t)
	m := startMember(t, group, "node9", "shop", 4900)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"listen", "--bind", "127.0.0.1", "--address", group.Addr().String(),
		"--port", strconv.Itoa(int(group.Port()))}, &stdout, &stderr)
	out := stdout.String()
	if code != exitOK || stderr.Len() > 0 {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr.String(), out)
	}
	if !strings.Contains(out, " until interrupted, sending nothing\n") ||
		!regexp.MustCompile(`(?m)^node9 +shop +127\.0\.0\.1:4900 +`+m.Local().ID.String()[:8]+` +0\.\ds +alive$`).MatchString(out) {
		t.Errorf("output:\n%s", out)
	}
}

func TestListenBindNotLocal(t *testing.T) {
	code, out, errb := runApp(t, "listen", "--bind", "198.51.100.254", "--for", "1s")
	if code != exitUsage || out != "" || !strings.Contains(errb, "--bind 198.51.100.254: no local interface has address 198.51.100.254") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// The counting and the table, without a network.
func TestWatch(t *testing.T) {
	w := newWatch(1)
	hb := func(name string, id byte, cmd membership.Command) []byte {
		m := membership.Member{ID: membership.ID{id}, Name: name, Domain: "shop", Addr: netip.MustParseAddrPort("10.0.0.5:4000")}
		b, err := membership.Heartbeat{Command: cmd, Seq: 1, Member: m}.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	from := netip.MustParseAddrPort("10.0.0.5:45564")
	t0 := fixedNow
	steps := []struct {
		p    packet
		at   time.Duration
		news string
	}{
		{packet{data: hb("b", 2, membership.CommandAlive), from: from, ifIndex: 1}, 0, "new      b  domain shop  address 10.0.0.5:4000  id 02000000  from 10.0.0.5:45564  alive"},
		{packet{data: hb("a", 1, membership.CommandAlive), from: from, ifIndex: 1}, 100 * time.Millisecond, "new      a  domain shop  address 10.0.0.5:4000  id 01000000  from 10.0.0.5:45564  alive"},
		{packet{data: hb("b", 2, membership.CommandAlive), from: from, ifIndex: 1}, 500 * time.Millisecond, ""},
		{packet{data: hb("b", 2, membership.CommandLeaving), from: from, ifIndex: 1}, 600 * time.Millisecond, "leaving  b  domain shop  address 10.0.0.5:4000  id 02000000  from 10.0.0.5:45564  leaving"},
		{packet{data: hb("b", 2, membership.CommandLeaving), from: from, ifIndex: 1}, 600 * time.Millisecond, ""},
		{packet{data: hb("c", 3, membership.CommandAlive), from: from, ifIndex: 7}, 0, ""}, // another interface
		{packet{data: []byte("hello")}, 0, ""},
		{packet{data: []byte{1, 2}}, 0, ""},
		{packet{data: append([]byte("FLKB\x02"), make([]byte, 60)...)}, 0, ""},
		{packet{data: append(hb("d", 4, membership.CommandAlive), 0)}, 0, ""}, // trailing byte
	}
	for i, s := range steps {
		if got := w.observe(s.p, t0.Add(s.at)); got != s.news {
			t.Errorf("step %d: news %q, want %q", i, got, s.news)
		}
	}
	var b bytes.Buffer
	w.render(&b, t0.Add(2*time.Second))
	checkLines(t, b.String(), `NAME  DOMAIN  ADDRESS        ID        AGE   CMD
a     shop    10.0.0.5:4000  01000000  1.9s  alive
b     shop    10.0.0.5:4000  02000000  1.4s  leaving
5 heartbeats from 2 members
2 packets ignored: not flock heartbeats
1 packet ignored: heartbeats of another version
1 packet ignored: malformed heartbeats
1 packet ignored: received on another interface
`)
}

// On a terminal the table is redrawn in place, under the news.
func TestViewLive(t *testing.T) {
	var b bytes.Buffer
	w := newWatch(0)
	v := &view{w: &b, live: true}
	v.refresh(w, fixedNow) // "no heartbeats yet": one line
	v.event("news", w, fixedNow)
	v.final(w, fixedNow)
	want := "no heartbeats yet\n" + "\x1b[1A\x1b[J" + "news\n" + "no heartbeats yet\n" + "\x1b[1A\x1b[J" + "no heartbeats yet\n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}

// With --key-file the sealed heartbeats of a keyed cluster are opened;
// without, or with another key, they are counted, not shown.
func TestWatchSealed(t *testing.T) {
	ring, err := keyring.New(bytes.Repeat([]byte{1}, keyring.Size))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := keyring.New(bytes.Repeat([]byte{2}, keyring.Size))
	m := membership.Member{ID: membership.ID{9}, Name: "k", Domain: "shop", Addr: netip.MustParseAddrPort("10.0.0.5:4000")}
	sealed, err := membership.SealHeartbeat(ring, membership.Heartbeat{Command: membership.CommandAlive, Seq: 1, Member: m}, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	clear, _ := membership.Heartbeat{Command: membership.CommandAlive, Seq: 1, Member: m}.MarshalBinary()
	tests := []struct {
		name string
		ring *keyring.Keyring
		p    []byte
		news string
		foot string
	}{
		{"opened", ring, sealed, "new      k  domain shop  address 10.0.0.5:4000  id 09000000  from invalid AddrPort  alive", "1 heartbeat from 1 member"},
		{"no key", nil, sealed, "", "1 packet ignored: sealed heartbeats (give --key-file to open them)"},
		{"other key", other, sealed, "", "1 packet ignored: sealed heartbeats that do not open with --key-file"},
		{"clear, keyed", ring, clear, "", "1 packet ignored: heartbeats in the clear (refused by a keyed cluster)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWatch(0)
			w.ring = tt.ring
			if got := w.observe(packet{data: tt.p}, fixedNow); got != tt.news {
				t.Errorf("news %q, want %q", got, tt.news)
			}
			var b bytes.Buffer
			w.render(&b, fixedNow)
			if !strings.Contains(b.String(), tt.foot) {
				t.Errorf("render:\n%s\nwant a line %q", b.String(), tt.foot)
			}
		})
	}
}
