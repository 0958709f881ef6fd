//go:build linux

package integration

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// startAll starts the nodes and returns when the last process was started.
func (c *cluster) startAll(nodes ...*node) time.Time {
	for _, n := range nodes {
		c.start(n)
	}
	return time.Now()
}

func (c *cluster) three() []*node {
	return []*node{c.add("node1", "default"), c.add("node2", "default"), c.add("node3", "default")}
}

// membershipKind is how a scenario's nodes find each other: the same
// scenarios run for each kind, with the bounds its timings promise.
type membershipKind struct {
	label string // the figures' prefix
	// conf sets n's membership, seeded with seeds; nil: multicast, the
	// lab's default.
	conf func(n *node, seeds ...*node)
	// pause says how a paused process is found out.
	pause string
}

var (
	multicastKind = membershipKind{pause: "failure detection after SIGSTOP (probe times out)"}
	gossipKind    = membershipKind{label: "gossip: ", conf: gossipConf, pause: "failure detection after SIGSTOP"}
)

// configure gives every node of nodes the kind's membership, seeded with
// seeds.
func (k membershipKind) configure(nodes []*node, seeds ...*node) []*node {
	if k.conf != nil {
		for _, n := range nodes {
			k.conf(n, seeds...)
		}
	}
	return nodes
}

// three is the usual three nodes, seeded with the first.
func (k membershipKind) three(c *cluster) []*node {
	nodes := c.three()
	return k.configure(nodes, nodes[0])
}

// Scenario 1: three nodes list each other within 2 s of the last start.
func TestConverge(t *testing.T) {
	scenario(t, alone, 0)
	converge(t, multicastKind)
}

func converge(t *testing.T, k membershipKind) {
	c := newQuietCluster(t)
	nodes := k.three(c)
	last := c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())
	took := time.Since(last)
	figures.add(t, k.label+"convergence, 3 nodes, from the last start", took, 2*time.Second)
	if took > 2*time.Second {
		t.Errorf("converged %v after the last start, want within 2s", took)
	}
}

// Scenario 2: kill -9 of a node; the others report it failed within
// drop_time + 2 heartbeats.
func TestKillDetected(t *testing.T) {
	scenario(t, timed, 0)
	killDetected(t, multicastKind)
}

func killDetected(t *testing.T, k membershipKind) {
	c := newCluster(t)
	nodes := k.three(c)
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
	figures.add(t, k.label+"failure detection after kill -9", took, bound)
	if took > bound {
		t.Errorf("failure detected %v after kill -9, want within %v", took, bound)
	}
	for _, n := range without(nodes, victim) {
		if !n.logged("event=failed", "member="+victim.name) {
			t.Errorf("%s did not log the failure of %s", n.name, victim.name)
		}
	}
}

// Scenario 3: SIGTERM; the others drop the node within 1 s, as a leave.
func TestGracefulLeave(t *testing.T) {
	scenario(t, timed, 0)
	gracefulLeave(t, multicastKind)
}

func gracefulLeave(t *testing.T, k membershipKind) {
	c := newCluster(t)
	nodes := k.three(c)
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())

	victim := nodes[2]
	stopped := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := victim.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.waitViews(10*time.Second, without(nodes, victim), c.others(victim))
	took := time.Since(stopped)
	figures.add(t, k.label+"leave seen after SIGTERM", took, time.Second)
	if took > time.Second {
		t.Errorf("leave seen %v after SIGTERM, want within 1s", took)
	}
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

// Scenario 4: SIGSTOP makes a node failed; SIGCONT brings it back, as the
// same process, on every node, and the paused node sees the others again.
func TestPauseAndResume(t *testing.T) {
	scenario(t, timed, 0)
	pauseAndResume(t, multicastKind)
}

func pauseAndResume(t *testing.T, k membershipKind) {
	c := newCluster(t)
	nodes := k.three(c)
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
	// A paused process answers no probe. Multicast probes a silent member
	// over TCP before it fails it; gossip (SWIM) suspects it, then declares
	// it dead after the suspicion timeout. Both fit this bound.
	bound := dropTime + probeTimeout + 2*frequency
	c.waitViews(bound+10*time.Second, without(nodes, victim), c.others(victim))
	took := time.Since(paused)
	figures.add(t, k.label+k.pause, took, bound)
	if took > bound {
		t.Errorf("SIGSTOP detected after %v, want within %v", took, bound)
	}

	resumed := time.Now()
	if err := victim.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	c.waitViews(30*time.Second, nodes, c.others())
	figures.add(t, k.label+"rejoin after SIGCONT", time.Since(resumed), 2*time.Second)
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

// Scenario 5: two domains that can reach each other do not see each other
// (multicast: the same group and port; gossip: each seeded with the other
// domain's nodes too, refused by the label).
func TestDomainsAreIsolated(t *testing.T) {
	scenario(t, idle, 0)
	domainsAreIsolated(t, multicastKind)
}

func domainsAreIsolated(t *testing.T, k membershipKind) {
	c := newCluster(t)
	nodes := []*node{c.add("a1", "alpha"), c.add("a2", "alpha"), c.add("b1", "beta"), c.add("b2", "beta")}
	k.configure(nodes, nodes...)
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())

	// Absence cannot be awaited: watch for several heartbeat intervals that
	// no node ever lists a member of the other domain.
	deadline := time.Now().Add(4 * frequency)
	for time.Now().Before(deadline) {
		c.checkViews(nodes, c.others())
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range nodes {
		if n.logged("event=joined", "member="+map[string]string{"alpha": "b", "beta": "a"}[n.domain]) {
			t.Errorf("%s logged a member of the other domain joining", n.name)
		}
	}
}

// Scenario 6: 10% packet loss on every host's link, default timings: no
// member is reported failed over 20 s.
func TestPacketLossNoFalseFailure(t *testing.T) {
	scenario(t, idle, 0)
	c := newCluster(t)
	nodes := c.three()
	c.startAll(nodes...)
	c.waitViews(30*time.Second, nodes, c.others())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	received := map[*node]uint64{}
	lost := map[*node]uint64{}
	for _, n := range nodes {
		s, err := n.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		received[n], lost[n] = s.Heartbeats.Received, s.Heartbeats.Lost
	}
	for _, n := range nodes {
		if err := n.host.SetEgressLoss(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		// Each check must pass at once: a member missing for even one poll
		// was reported failed.
		c.checkViews(nodes, c.others())
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range nodes {
		if n.logged("event=failed") {
			t.Errorf("%s reported a failure under 10%% loss", n.name)
		}
		s, err := n.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The loss was real: the sequence gaps show it.
		got, gone := s.Heartbeats.Received-received[n], s.Heartbeats.Lost-lost[n]
		rate := float64(gone) / float64(got+gone)
		t.Logf("%s: %d heartbeats received, %d lost (%.1f%%)", n.name, got, gone, 100*rate)
		if rate < 0.02 || rate > 0.3 {
			t.Errorf("%s measured %.1f%% heartbeat loss; netem at 10%% did not take effect", n.name, 100*rate)
		}
	}
}
