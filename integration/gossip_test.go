//go:build linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/flockhq/flock/keyring"
)

// The membership scenarios with type = "gossip" (hashicorp/memberlist),
// keyed as every lab cluster is: the same bounds as multicast's where
// gossip's derived timings promise them (probe interval = frequency,
// suspicion = drop_time/frequency - 2 intervals), printed with the other
// figures.

const gossipPort = 7946

// gossipConf makes n a gossip member whose seeds are the given nodes'
// gossip addresses, in order.
func gossipConf(n *node, seeds ...*node) {
	list := ""
	for i, s := range seeds {
		if i > 0 {
			list += ", "
		}
		list += fmt.Sprintf("%q", fmt.Sprintf("%s:%d", s.host.IP, gossipPort))
	}
	n.conf = fmt.Sprintf("[cluster.membership]\ntype = \"gossip\"\n[cluster.membership.gossip]\nbind = \"%s:%d\"\nseeds = [%s]\n", n.host.IP, gossipPort, list)
}

// gossipThree is three gossip nodes, each seeded with the first.
func (c *cluster) gossipThree() []*node {
	nodes := c.three()
	for _, n := range nodes {
		gossipConf(n, nodes[0])
	}
	return nodes
}

func TestGossipConverge(t *testing.T) {
	scenario(t, alone, 0)
	c := newQuietCluster(t)
	nodes := c.gossipThree()
	last := c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	took := time.Since(last)
	figures.add(t, "gossip: convergence, 3 nodes, from the last start", took, 2*time.Second)
	if took > 2*time.Second {
		t.Errorf("converged %v after the last start, want within 2s", took)
	}
}

func TestGossipKillDetected(t *testing.T) {
	scenario(t, timed, 0)
	c := newCluster(t)
	nodes := c.gossipThree()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	victim := nodes[2]
	killed := time.Now()
	if err := victim.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	bound := dropTime + 2*frequency
	c.waitViews(bound+10*time.Second, without(nodes, victim), c.others(victim))
	took := time.Since(killed)
	figures.add(t, "gossip: failure detection after kill -9", took, bound)
	if took > bound {
		t.Errorf("failure detected %v after kill -9, want within %v", took, bound)
	}
	for _, n := range without(nodes, victim) {
		if !n.logged("event=failed", "member="+victim.name) {
			t.Errorf("%s did not log the failure of %s", n.name, victim.name)
		}
	}
}

func TestGossipGracefulLeave(t *testing.T) {
	scenario(t, timed, 0)
	c := newCluster(t)
	nodes := c.gossipThree()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	victim := nodes[2]
	stopped := time.Now()
	if err := victim.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.waitViews(10*time.Second, without(nodes, victim), c.others(victim))
	took := time.Since(stopped)
	figures.add(t, "gossip: leave seen after SIGTERM", took, time.Second)
	if took > time.Second {
		t.Errorf("leave seen %v after SIGTERM, want within 1s", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-victim.proc.Done():
		if err := victim.proc.ExitErr(); err != nil {
			t.Errorf("flockd did not exit 0 on SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Errorf("flockd still running 30s after SIGTERM")
	}
	for _, n := range without(nodes, victim) {
		if !n.logged("event=left", "member="+victim.name) {
			t.Errorf("%s did not log %s leaving", n.name, victim.name)
		}
	}
}

func TestGossipPauseAndResume(t *testing.T) {
	scenario(t, timed, 0)
	c := newCluster(t)
	nodes := c.gossipThree()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	victim := nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := victim.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	if err := victim.proc.Pause(); err != nil {
		t.Fatal(err)
	}
	// A paused process answers no probe: SWIM suspects it, then declares
	// it dead after the suspicion timeout.
	bound := dropTime + probeTimeout + 2*frequency
	c.waitViews(bound+10*time.Second, without(nodes, victim), c.others(victim))
	took := time.Since(paused)
	figures.add(t, "gossip: failure detection after SIGSTOP", took, bound)
	if took > bound {
		t.Errorf("SIGSTOP detected after %v, want within %v", took, bound)
	}
	resumed := time.Now()
	if err := victim.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	c.waitViews(30*time.Second, nodes, c.others())
	figures.add(t, "gossip: rejoin after SIGCONT", time.Since(resumed), 2*time.Second)
	for _, n := range without(nodes, victim) {
		s, err := n.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range s.Members {
			if m.Name == victim.name && m.ID != before.Local.ID {
				t.Errorf("%s lists %s with id %s, want the same process %s", n.name, victim.name, m.ID, before.Local.ID)
			}
		}
		if !n.logged("event=failed", "member="+victim.name) {
			t.Errorf("%s did not log %s failing while paused", n.name, victim.name)
		}
	}
}

// Two domains seeded with each other's nodes: the label refuses the other
// domain's gossip.
func TestGossipDomainsAreIsolated(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := []*node{c.add("a1", "alpha"), c.add("a2", "alpha"), c.add("b1", "beta"), c.add("b2", "beta")}
	for _, n := range nodes {
		gossipConf(n, nodes...)
	}
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	deadline := time.Now().Add(4 * frequency)
	for time.Now().Before(deadline) {
		c.checkViews(nodes, c.others())
		time.Sleep(100 * time.Millisecond) // absence cannot be awaited
	}
	for _, n := range nodes {
		if n.logged("event=joined", "member="+map[string]string{"alpha": "b", "beta": "a"}[n.domain]) {
			t.Errorf("%s logged a member of the other domain joining", n.name)
		}
	}
}

// 10% loss on every link for 20 s: no member is reported failed (SWIM's
// indirect probes and TCP fallback, and the transport's confirmation).
func TestGossipPacketLossNoFalseFailure(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := c.gossipThree()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range nodes {
		if err := n.host.SetEgressLoss(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		c.checkViews(nodes, c.others())
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range nodes {
		if n.logged("event=failed") {
			t.Errorf("%s reported a failure under 10%% loss", n.name)
		}
	}
}

// A node joins through a seed list whose first seed is down.
func TestGossipFirstSeedDown(t *testing.T) {
	scenario(t, timed, 0)
	c := newCluster(t)
	nodes := c.three()
	down := nodes[2] // its host exists; no process listens there
	gossipConf(nodes[0])
	gossipConf(nodes[1], down, nodes[0])
	c.nodes = nodes[:2]
	c.startAll(nodes[0])
	c.nodes = nodes[:1]
	c.waitViews(30*time.Second, nodes[:1], c.others()) // the live seed serves
	c.nodes = nodes[:2]
	started := time.Now()
	c.start(nodes[1])
	c.waitViews(30*time.Second, nodes[:2], c.others())
	figures.add(t, "gossip: join through a seed list whose first seed is down", time.Since(started), 5*time.Second)
}

// A host without the cluster key gossips at a member: refused, counted,
// never a member.
func TestGossipAttackerRefused(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := c.three()
	attacker := nodes[2]
	gossipConf(nodes[0])
	gossipConf(nodes[1], nodes[0])
	gossipConf(attacker, nodes[0])
	other := filepath.Join(c.dir, "other.keys")
	if err := os.WriteFile(other, []byte(keyring.Generate()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	attacker.conf += fmt.Sprintf("\n[cluster.security]\nkey_file = %q\n", other)
	c.startAll(nodes...)
	legit := nodes[:2]
	c.nodes = legit
	c.waitViews(30*time.Second, legit, c.others())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	re := regexp.MustCompile(`refused_total\{component="membership",reason="forged"\} (\d+)`)
	var refused int
	for refused == 0 {
		code, body, err := nodes[0].get(ctx, "/metrics", "")
		if err != nil || code != 200 {
			t.Fatalf("metrics: %d %v", code, err)
		}
		if m := re.FindStringSubmatch(body); m != nil {
			refused, _ = strconv.Atoi(m[1])
		}
		if refused == 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("no gossip refused as forged; metrics:\n%s", body)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	c.checkViews(legit, c.others())
	if got, _ := attacker.members(ctx); len(got) != 0 {
		t.Errorf("the attacker lists %v", got)
	}
	t.Logf("gossip refused as forged by %s: %d", nodes[0].name, refused)
}
