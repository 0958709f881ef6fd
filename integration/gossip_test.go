//go:build linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// The scenarios shared with multicast (membership_test.go), with gossip.

func TestGossipConverge(t *testing.T) {
	scenario(t, alone, 0)
	converge(t, gossipKind)
}

func TestGossipKillDetected(t *testing.T) {
	scenario(t, timed, 0)
	killDetected(t, gossipKind)
}

func TestGossipGracefulLeave(t *testing.T) {
	scenario(t, timed, 0)
	gracefulLeave(t, gossipKind)
}

func TestGossipPauseAndResume(t *testing.T) {
	scenario(t, timed, 0)
	pauseAndResume(t, gossipKind)
}

func TestGossipDomainsAreIsolated(t *testing.T) {
	scenario(t, idle, 0)
	domainsAreIsolated(t, gossipKind)
}

// 10% loss on every link for 20 s: no member is reported failed (SWIM's
// indirect probes and TCP fallback, and the transport's confirmation).
func TestGossipPacketLossNoFalseFailure(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := gossipKind.three(c)
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
