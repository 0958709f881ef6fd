//go:build linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flockhq/flock/integration/lab"
)

// dnsmasqPath is Debian's dnsmasq (package dnsmasq-base), the real DNS
// server the DNS membership scenario asks.
const dnsmasqPath = "/usr/sbin/dnsmasq"

// dnsServer is dnsmasq on a lab host, answering A records for one name
// from a hosts file the test rewrites (and reloads with SIGHUP).
type dnsServer struct {
	host  *lab.Host
	proc  *lab.Proc
	hosts string // the addn-hosts file
}

func startDNSServer(t *testing.T, c *cluster) *dnsServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := c.lab.AddHost(ctx, "dns")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{host: h, hosts: filepath.Join(c.dir, "dns.hosts")}
	if err := os.WriteFile(d.hosts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ip := h.IP.String()
	d.proc, err = h.Start(ctx, lab.ProcConfig{Path: dnsmasqPath, Name: "dnsmasq", Args: []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--user=root",
		"--addn-hosts=" + d.hosts, "--listen-address=" + ip, "--bind-interfaces", "--port=53",
		"--local-ttl=0", "--pid-file=" + filepath.Join(c.dir, "dnsmasq.pid"), "--log-facility=-", "--log-queries",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WaitDial(ctx, "tcp", ip+":53"); err != nil {
		t.Fatalf("dnsmasq does not answer: %v\n%s", err, d.proc.Output())
	}
	return d
}

// set makes name resolve to the nodes' addresses (none: no record).
func (d *dnsServer) set(t *testing.T, name string, nodes ...*node) {
	t.Helper()
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "%s %s\n", n.host.IP, name)
	}
	if err := os.WriteFile(d.hosts, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// Scenario: three nodes with DNS membership ask a real DNS server
// (dnsmasq) for "flock.lab". While it has no record, the first node
// starts alone and is ready; node2 and node3 start while the name lists
// node1 only, so each finds node1 (and node1 them, as they ping it) but
// not each other; once the name lists all three, every node lists the
// others within a few lookups. node3's record removed and node3 killed,
// the others drop it after drop_time.
func TestDNSMembership(t *testing.T) {
	scenario(t, timed, 30*time.Second)
	if _, err := os.Stat(dnsmasqPath); err != nil {
		t.Skipf("no dnsmasq (apt-get install dnsmasq-base): %v", err)
	}
	c := newCluster(t)
	dns := startDNSServer(t, c)
	nodes := []*node{c.add("node1", "default"), c.add("node2", "default"), c.add("node3", "default")}
	const interval = 500 * time.Millisecond
	for _, n := range nodes {
		n.conf = fmt.Sprintf("[cluster.membership]\ntype = \"dns\"\n[cluster.membership.dns]\nname = \"flock.lab\"\nserver = \"%s:53\"\ninterval = %q\n",
			dns.host.IP, interval)
	}
	defer c.setUp()

	// Nobody in DNS: node1 is a cluster of one, and ready.
	dns.set(t, "flock.lab")
	c.start(nodes[0])
	nodes[0].waitHealthy(t, scale(30*time.Second))

	// node1 only: node2 and node3 find it, not each other.
	dns.set(t, "flock.lab", nodes[0])
	c.start(nodes[1])
	c.start(nodes[2])
	partial := func(n *node) []string {
		if n == nodes[0] {
			return []string{"node2", "node3"}
		}
		return []string{"node1"}
	}
	c.waitViews(scale(30*time.Second), nodes, partial)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range nodes[1:] {
		if ms, err := n.members(ctx); err != nil || len(ms) != 1 {
			t.Fatalf("%s lists %v (%v) while DNS names node1 only", n.name, ms, err)
		}
	}

	// Everyone in DNS: the full view within a few lookups.
	dns.set(t, "flock.lab", nodes...)
	join := c.waitViews(scale(30*time.Second), nodes, c.others())
	figures.add(t, "DNS membership: every node lists the others after the records list them (lookups every 500ms)", join, scale(5*time.Second))

	// node3 out of DNS and killed: dropped after drop_time.
	dns.set(t, "flock.lab", nodes[:2]...)
	if err := nodes[2].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	leave := c.waitViews(scale(30*time.Second), nodes[:2], c.others(nodes[2]))
	figures.add(t, "DNS membership: node3 (record removed, kill -9) dropped by the others after", leave, scale(dropTime+2*time.Second))
	// The nodes asked the server, and it answered from the records.
	queries := 0
	for _, line := range strings.Split(dns.proc.Output(), "\n") {
		if strings.Contains(line, "query[A] flock.lab") {
			queries++
		}
	}
	t.Logf("dnsmasq answered %d queries for flock.lab", queries)
	if queries < 3 {
		t.Errorf("dnsmasq logged %d queries for flock.lab:\n%s", queries, dns.proc.Output())
	}
}
