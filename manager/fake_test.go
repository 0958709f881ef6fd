package manager

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/cluster/clustertest"
	"github.com/flockhq/flock/internal/clock"
)

// fakeNet is clustertest's in-memory network with the names the tests use:
// messages delivered in order per pair of nodes, drops, duplicates, holds
// released in reverse order, nodes going down and coming back, every change
// an event a test can wait on (waitFor).
type fakeNet struct {
	*clustertest.Network
	t     testing.TB
	mu    sync.Mutex
	nodes map[*clustertest.Node]*fakeNode
}

// fakeNode is one node: a real *cluster.Cluster on the in-memory network,
// which is what the manager is built on.
type fakeNode struct {
	*cluster.Cluster
	node    *clustertest.Node
	started bool
}

// envelope describes a message on its way, for holdIf.
type envelope struct {
	from, to *fakeNode
	typ      cluster.MessageType
	mode     cluster.Mode
	request  bool
}

// newFakeNet returns an empty network, closed when the test ends (after the
// managers built on it have been stopped, see newCluster).
func newFakeNet(t testing.TB) *fakeNet {
	n := &fakeNet{Network: clustertest.New(), t: t, nodes: make(map[*clustertest.Node]*fakeNode)}
	t.Cleanup(n.Close)
	return n
}

// addNode adds a node named name; it is not a member of the cluster (the
// others do not see it, and sends to it fail) until join. Nodes added
// earlier are older: the oldest member serves state transfers.
func (n *fakeNet) addNode(name string) *fakeNode {
	nd := n.AddNode(name)
	f := &fakeNode{Cluster: nd.Cluster(), node: nd}
	n.mu.Lock()
	n.nodes[nd] = f
	n.mu.Unlock()
	return f
}

func (n *fakeNet) fake(nd *clustertest.Node) *fakeNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodes[nd]
}

// dropNext drops the next k messages of type typ sent to node to.
func (n *fakeNet) dropNext(to *fakeNode, typ cluster.MessageType, k int) { n.DropNext(to.node, typ, k) }

// duplicate makes every message delivered twice from now on.
func (n *fakeNet) duplicate(on bool) { n.Duplicate(on) }

// holdIf holds, from now on, every message for which match is true until
// release. Held Ack and Sync sends and requests block.
func (n *fakeNet) holdIf(match func(e *envelope) bool) {
	n.HoldIf(func(e clustertest.Envelope) bool {
		return match(&envelope{from: n.fake(e.From), to: n.fake(e.To), typ: e.Type, mode: e.Mode, request: e.Request})
	})
}

// holdTo holds every message sent to node to.
func (n *fakeNet) holdTo(to *fakeNode) { n.HoldTo(to.node) }

// release stops holding and delivers the held messages in reverse order.
func (n *fakeNet) release() { n.Release() }

// heldCount is the number of messages being held.
func (n *fakeNet) heldCount() int { return n.HeldCount() }

// idle reports whether no message is queued, being handled or held.
func (n *fakeNet) idle() bool { return n.Idle() }

// count is the number of messages of type typ from one node to another that
// were handed to the receiver's handler.
func (n *fakeNet) count(from, to *fakeNode, typ cluster.MessageType) int {
	return n.Count(from.node, to.node, typ)
}

// waitFor waits until cond is true (see clustertest.Network.WaitFor).
func (n *fakeNet) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	n.WaitFor(t, what, cond)
}

// Name is the node's name.
func (nd *fakeNode) Name() string { return nd.node.Name() }

// join makes the node a member: the others list it and can send to it.
func (nd *fakeNode) join() { nd.node.Join() }

// setUp takes the node down (false: the others see it fail, sends to and
// from it fail) or back up (the others see it rejoin).
func (nd *fakeNode) setUp(up bool) { nd.node.SetUp(up) }

// isolate cuts the node off (true) or heals the cut: the others see it
// fail and rejoin, and it sees each of them fail and rejoin.
func (nd *fakeNode) isolate(cut bool) { nd.node.Isolate(cut) }

// leave takes the node out as a goodbye would.
func (nd *fakeNode) leave() { nd.node.Leave() }

// isMember reports whether the other nodes list this one.
func (nd *fakeNode) isMember(of *fakeNode) bool {
	for _, m := range of.Members() {
		if m.ID == nd.Local().ID {
			return true
		}
	}
	return false
}

// start starts the node's cluster (its membership events begin to flow) if
// it has not been started; it is stopped when the test ends.
func (nd *fakeNode) start(t testing.TB) {
	t.Helper()
	if nd.started {
		return
	}
	nd.started = true
	if err := nd.Cluster.Start(context.Background()); err != nil {
		t.Fatalf("start cluster %s: %v", nd.Name(), err)
	}
	t.Cleanup(func() { nd.Cluster.Stop(context.Background()) })
}

// testCluster is a fakeNet with a started Manager on each node.
type testCluster struct {
	t     testing.TB
	net   *fakeNet
	nodes []*fakeNode
	ms    []*Manager
	recs  []*recorder
	clock *clock.Fake // the managers' clock, if the configuration has a fake one
}

// isMember reports whether node i is a member as the other nodes see it.
func (c *testCluster) isMember(i int) bool {
	for j, o := range c.nodes {
		if j != i {
			return c.nodes[i].isMember(o)
		}
	}
	return true
}

// testConfig is the base configuration of the tests' managers.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.SessionTimeout = time.Minute
	cfg.Replication = cluster.Sync
	cfg.RequestTimeout = 5 * time.Second
	cfg.StateTransferTimeout = 10 * time.Second
	// No background anti-entropy and no stall watch: the tests that want
	// them turn them on, so the others count their messages exactly.
	cfg.AntiEntropyInterval, cfg.StallAfter = 0, 0
	return cfg
}

// newCluster starts one manager per name (each name is also the node's
// route), with cfg and then tweak applied to it, and waits until every one
// is ready. The managers are stopped when the test ends, before the network
// closes, in the order of a real shutdown.
//
// With a fake clock in cfg, the clock stands still except for the 100 ms
// backup mode's recovery waits for the member view to settle.
func newCluster(t testing.TB, cfg Config, names ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: newFakeNet(t)}
	c.clock, _ = cfg.Clock.(*clock.Fake)
	for _, name := range names {
		c.add(name, cfg)
	}
	for _, nd := range c.nodes {
		nd.join()
	}
	for i := range c.ms {
		c.start(i)
	}
	if c.clock != nil && cfg.Mode == ModeBackup {
		c.settle(len(c.ms))
	}
	for _, m := range c.ms {
		c.ready(m)
	}
	c.waitFor("every member confirmed by a round trip", c.confirmed)
	return c
}

// confirmed reports whether every manager has had a round trip with each
// member of its view, so that sync commits wait for all of them.
func (c *testCluster) confirmed() bool {
	for _, m := range c.ms {
		if m.ctx.Err() != nil {
			continue
		}
		for _, mb := range m.members() {
			if !m.confirmedMember(mb) {
				return false
			}
		}
	}
	return true
}

// loops is the number of the managers' goroutines that wait on the clock
// between their steps: each running manager's expiry sweep and touch
// batches, its placement's step and its persistence writer (two tickers).
func (c *testCluster) loops() int {
	n := 0
	for _, m := range c.ms {
		if !m.started.Load() || m.ctx.Err() != nil {
			continue
		}
		n += 2
		if m.cfg.AntiEntropyInterval > 0 || m.cfg.StallAfter > 0 {
			n++ // anti-entropy's ticker
		}
		if m.cfg.StallAfter > 0 {
			n++ // the stall watch's ticker
		}
		if m.place.period() > 0 {
			n++
		}
		if m.persist != nil {
			n += 2
		}
	}
	return n
}

// idle waits until every manager's loop waits on the fake clock again and
// nothing is under way in the network (see settled).
func (c *testCluster) idle() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.clock.BlockUntilContext(ctx, c.loops()); err != nil {
		c.t.Fatalf("the managers' loops do not wait on the clock: %d of %d", c.clock.Waiters(), c.loops())
	}
	c.waitFor("the network idle", c.settled)
}

// step advances the fake clock by d, in one move, and waits until the
// managers have done what fell due (idle).
func (c *testCluster) step(d time.Duration) {
	c.t.Helper()
	c.idle()
	c.clock.Advance(d)
	c.idle()
}

// settle lets the recovery of n starting backup-mode managers go on: each
// waits for the member view to stay quiet for 100 ms of the clock (two
// timers).
func (c *testCluster) settle(n int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.clock.BlockUntilContext(ctx, c.loops()+2*n); err != nil {
		c.t.Fatalf("%d managers not settling: %d waiters, want %d", n, c.clock.Waiters(), c.loops()+2*n)
	}
	c.clock.Advance(100 * time.Millisecond)
}

// add builds the manager of a new node, not yet a member, not started.
func (c *testCluster) add(name string, cfg Config) int {
	c.t.Helper()
	nd := c.net.addNode(name)
	cfg.Route = name
	m, err := New(nd, cfg)
	if err != nil {
		c.t.Fatalf("New(%s): %v", name, err)
	}
	rec := &recorder{net: c.net}
	m.AddListener(rec.listener())
	c.nodes = append(c.nodes, nd)
	c.ms = append(c.ms, m)
	c.recs = append(c.recs, rec)
	return len(c.ms) - 1
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	m := c.ms[i]
	c.nodes[i].start(c.t)
	if err := m.Start(context.Background()); err != nil {
		c.t.Fatalf("Start(%s): %v", c.nodes[i].Name(), err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			c.t.Errorf("Stop(%s): %v", m.local, err)
		}
	})
}

// join adds a node to the running cluster and starts its manager (which
// begins its state transfer); it does not wait for Ready.
func (c *testCluster) join(name string, cfg Config) int {
	c.t.Helper()
	i := c.add(name, cfg)
	c.nodes[i].join()
	c.start(i)
	return i
}

func (c *testCluster) ready(m *Manager) {
	c.t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s not ready", m.local)
	}
}

// waitFor waits for cond on the cluster's events (see fakeNet.waitFor).
func (c *testCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	c.net.waitFor(c.t, what, cond)
}

// settled reports whether nothing is under way that could change a
// session: no message in the network, no repair queued, no fetch waiting
// for its answer.
func (c *testCluster) settled() bool {
	if !c.net.idle() {
		return false
	}
	for _, m := range c.ms {
		if len(m.repairs) > 0 || len(m.aeKick) > 0 || m.aeBusy.Load() > 0 {
			return false
		}
	}
	return true
}

// waitConverged waits until the cluster has settled with every manager
// holding the same copy of each id.
func (c *testCluster) waitConverged(ids ...string) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("%d sessions equal everywhere", len(ids)), func() bool {
		if !c.settled() {
			return false
		}
		for _, id := range ids {
			if !c.converged(id) {
				return false
			}
		}
		return true
	})
}

// state is the session id as manager m holds it.
func state(m *Manager, id string) (snapshot, bool) {
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		return snapshot{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.toSnapshot(), true
}

// converged reports whether every manager holds id with the same version,
// origin and attributes (and, if want is not nil, those of want).
func (c *testCluster) converged(id string) bool {
	ref, ok := state(c.ms[0], id)
	if !ok {
		return false
	}
	for _, m := range c.ms[1:] {
		s, ok := state(m, id)
		if !ok || !sameSession(ref, s) {
			return false
		}
	}
	return true
}

func sameSession(a, b snapshot) bool {
	if a.ID != b.ID || a.Version != b.Version || a.Origin != b.Origin || len(a.Attrs) != len(b.Attrs) {
		return false
	}
	for k, v := range a.Attrs {
		if w, ok := b.Attrs[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}

// nowhere reports whether no manager holds id.
func (c *testCluster) nowhere(id string) bool {
	for _, m := range c.ms {
		if _, ok := state(m, id); ok {
			return false
		}
	}
	return true
}

// event is one listener call.
type event struct {
	kind    string // "created", "destroyed", "attr"
	id      string
	key     string
	reason  string
	deleted bool
	remote  bool
	at      time.Time
}

// recorder records a manager's listener calls; each one is an event of
// the network for waitFor.
type recorder struct {
	net *fakeNet
	mu  sync.Mutex
	evs []event
}

func (r *recorder) add(e event) {
	e.at = time.Now()
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) listener() Listener {
	return Listener{
		Created: func(id string, remote bool) { r.add(event{kind: "created", id: id, remote: remote}) },
		Destroyed: func(id, reason string, remote bool) {
			r.add(event{kind: "destroyed", id: id, reason: reason, remote: remote})
		},
		AttributeChanged: func(id, key string, deleted, remote bool) {
			r.add(event{kind: "attr", id: id, key: key, deleted: deleted, remote: remote})
		},
	}
}

// find returns the events of a kind for id.
func (r *recorder) find(kind, id string) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.evs {
		if e.kind == kind && (id == "" || e.id == id) {
			out = append(out, e)
		}
	}
	return out
}

// short names a session in a test's messages.
func short(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}
