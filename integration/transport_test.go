//go:build linux

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// staticThree is three nodes with type = "static", listing each other's
// receivers: no multicast anywhere.
func (c *cluster) staticThree() []*node {
	nodes := c.three()
	var peers []string
	for _, n := range nodes {
		peers = append(peers, fmt.Sprintf("%q", n.host.IP.String()+":4000"))
	}
	for _, n := range nodes {
		n.conf = fmt.Sprintf("[cluster.membership]\ntype = \"static\"\n[cluster.membership.static]\nmembers = [%s]\n", strings.Join(peers, ", "))
	}
	return nodes
}

// Static membership: three nodes converge, and kill -9 and SIGSTOP are
// detected, with the same bounds as multicast.
func TestStaticMembership(t *testing.T) {
	scenario(t, timed, 0)
	c := newQuietCluster(t)
	nodes := c.staticThree()
	last := c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	figures.add(t, "static: convergence, 3 nodes, from the last start", time.Since(last), 2*time.Second)
	for _, n := range nodes {
		if n.logged("event=joined", "reason=heartbeat") && !n.logged("static membership started") {
			t.Errorf("%s did not run static membership", n.name)
		}
	}

	victim := nodes[2]
	killed := time.Now()
	if err := victim.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	bound := dropTime + 2*frequency
	c.waitViews(bound+10*time.Second, nodes[:2], c.others(victim))
	took := time.Since(killed)
	figures.add(t, "static: failure detection after kill -9", took, bound)
	if took > bound {
		t.Errorf("kill -9 detected after %v, want within %v", took, bound)
	}

	paused := nodes[1]
	stopped := time.Now()
	if err := paused.proc.Pause(); err != nil {
		t.Fatal(err)
	}
	c.waitViews(bound+10*time.Second, nodes[:1], func(*node) []string { return nil })
	figures.add(t, "static: failure detection after SIGSTOP", time.Since(stopped), bound+time.Second)
	resumed := time.Now()
	if err := paused.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	c.waitViews(30*time.Second, nodes[:2], c.others(victim))
	figures.add(t, "static: rejoin after SIGCONT", time.Since(resumed), 2*time.Second)
}

// A node whose multicast is cut but whose TCP answers stays a member
// (suspect): the probe over the transport vouches for it. SIGSTOP, by
// contrast, fails it: the kernel still accepts the probe's connection, but
// the paused process does not answer.
func TestMulticastCutTCPOpenStays(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := c.three()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())

	cut := nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cut.host.BlockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	// Watch for three drop times: the members must stay listed throughout,
	// the cut node must turn suspect on the others.
	end := time.Now().Add(3 * dropTime)
	sawSuspect := false
	for time.Now().Before(end) {
		c.checkViews(nodes, c.others())
		s, err := nodes[0].status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range s.Members {
			sawSuspect = sawSuspect || (m.Name == cut.name && m.State == "suspect")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawSuspect {
		t.Errorf("%s never listed %s as suspect while its heartbeats were cut", nodes[0].name, cut.name)
	}
	for _, n := range nodes {
		if n.logged("event=failed") {
			t.Errorf("%s reported a failure while only multicast was cut", n.name)
		}
	}
	if err := cut.host.UnblockMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	// Heartbeats again: alive, not suspect.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := nodes[0].status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		alive := false
		for _, m := range s.Members {
			alive = alive || (m.Name == cut.name && m.State == "alive")
		}
		if alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still not alive after multicast came back: %+v", cut.name, s.Members)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
