package manager

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/internal/leakcheck"
	"github.com/flockhq/flock/membership"
)

// fakeNet is an in-process network of fake nodes, each implementing the
// manager's Cluster. Messages from one node to another are delivered in send
// order by one goroutine per (sender, receiver) pair, so the handlers of one
// sender run one at a time and in order, as with the real transport. Async
// sends return at once, Ack sends when the pair's goroutine has taken the
// message (before the handler runs), Sync sends when the handler returned,
// with its error.
//
// The network can drop messages, duplicate them, hold them and release them
// in reverse order, and take nodes down. Every delivery, drop, hold and
// release is an event a test can wait on (waitFor).
type fakeNet struct {
	t      testing.TB
	ctx    context.Context // handlers' context; cancelled by close
	cancel context.CancelFunc
	base   time.Time
	wg     sync.WaitGroup // the pair goroutines

	mu        sync.Mutex
	closed    bool
	nodes     []*fakeNode
	pairs     map[[2]*fakeNode]*fakePair
	drops     []*dropRule
	dup       bool
	hold      func(*envelope) bool
	held      []*envelope
	delivered map[countKey]int // messages handed to a handler, by (from, to, type)
	inflight  int              // queued or being handled
	event     chan struct{}    // closed and replaced on every event
}

type countKey struct {
	from, to string
	typ      flock.MessageType
}

type dropRule struct {
	to  string
	typ flock.MessageType
	n   int
}

// envelope is one message on its way to one node.
type envelope struct {
	from, to  *fakeNode
	msg       flock.Message
	mode      flock.Mode
	taken     chan struct{} // closed when the pair goroutine took it (Ack)
	done      chan struct{} // closed when its handler returned (Sync)
	err       error         // the handler's, or why it was not delivered; set before done is closed
	lost      bool          // not delivered (down, network closed)
	queued    bool          // counted in fakeNet.inflight
	finalized bool          // under fakeNet.mu
}

type fakePair struct {
	queue []*envelope
	wake  chan struct{} // cap 1
}

var (
	errDown   = errors.New("fake: node is down")
	errClosed = errors.New("fake: network closed")
)

// newFakeNet returns an empty network, closed when the test ends (after
// the managers built on it have been stopped, see newCluster).
func newFakeNet(t testing.TB) *fakeNet {
	ctx, cancel := context.WithCancel(context.Background())
	n := &fakeNet{
		t: t, ctx: ctx, cancel: cancel, base: time.Now(),
		pairs:     make(map[[2]*fakeNode]*fakePair),
		delivered: make(map[countKey]int),
		event:     make(chan struct{}),
	}
	t.Cleanup(n.close)
	return n
}

// addNode adds a node named name; it is not a member of the cluster (the
// others do not see it, and sends to it fail) until join. Nodes added
// earlier are older: the oldest member serves state transfers.
func (n *fakeNet) addNode(name string) *fakeNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	i := len(n.nodes)
	nd := &fakeNode{
		net: n,
		member: membership.Member{
			ID:      membership.ID{byte(i + 1)},
			Name:    name,
			Domain:  "test",
			Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(4000+i)),
			Started: n.base.Add(time.Duration(i) * time.Millisecond),
		},
		handlers: make(map[flock.MessageType]flock.Handler),
		up:       true,
	}
	n.nodes = append(n.nodes, nd)
	return nd
}

// close stops every pair goroutine; messages not yet handled fail.
func (n *fakeNet) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.cancel()
	for _, e := range n.held {
		n.fail(e, errClosed)
	}
	n.held = nil
	for _, p := range n.pairs {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// notify wakes the waiters of waitFor; n.mu must be held.
func (n *fakeNet) notify() {
	close(n.event)
	n.event = make(chan struct{})
}

func (n *fakeNet) events() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.event
}

// finalize ends e after running its handler (err is the handler's).
// n.mu must be held.
func (n *fakeNet) finalize(e *envelope, err error) {
	if e.finalized {
		return
	}
	e.finalized = true
	e.err = err
	if e.queued {
		n.inflight--
	}
	select {
	case <-e.taken:
	default:
		close(e.taken)
	}
	close(e.done)
}

// fail ends e without delivering it; n.mu must be held.
func (n *fakeNet) fail(e *envelope, err error) {
	if !e.finalized {
		e.lost = true
	}
	n.finalize(e, err)
}

// enqueue puts e on its pair's queue, starting the pair goroutine on first
// use; n.mu must be held.
func (n *fakeNet) enqueue(e *envelope) {
	key := [2]*fakeNode{e.from, e.to}
	p := n.pairs[key]
	if p == nil {
		p = &fakePair{wake: make(chan struct{}, 1)}
		n.pairs[key] = p
		n.wg.Add(1)
		go n.deliver(p)
	}
	p.queue = append(p.queue, e)
	e.queued = true
	n.inflight++
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// deliver runs the handlers of one (sender, receiver) pair in send order.
func (n *fakeNet) deliver(p *fakePair) {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		for len(p.queue) == 0 && !n.closed {
			n.mu.Unlock()
			<-p.wake
			n.mu.Lock()
		}
		if n.closed {
			for _, e := range p.queue {
				n.fail(e, errClosed)
			}
			p.queue = nil
			n.mu.Unlock()
			return
		}
		e := p.queue[0]
		p.queue = p.queue[1:]
		if !e.to.isMember() {
			n.fail(e, errDown)
			n.notify()
			n.mu.Unlock()
			continue
		}
		times := 1
		if n.dup {
			times = 2
		}
		close(e.taken)
		n.delivered[countKey{e.from.Name(), e.to.Name(), e.msg.Type}]++
		n.mu.Unlock()

		h := e.to.handler(e.msg.Type)
		var err error
		for i := range times {
			var herr error
			if h == nil {
				herr = fmt.Errorf("fake: %s has no handler for type %d", e.to.Name(), e.msg.Type)
			} else {
				msg := e.msg
				msg.Payload = append([]byte(nil), e.msg.Payload...) // the handler's to keep
				herr = h(n.ctx, msg)
			}
			if i == 0 {
				err = herr
			}
		}

		n.mu.Lock()
		n.finalize(e, err)
		n.notify()
		n.mu.Unlock()
	}
}

// dropNext drops the next k messages of type typ sent to node to. The
// sender does not notice (as with a message lost after it was acknowledged).
func (n *fakeNet) dropNext(to *fakeNode, typ flock.MessageType, k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drops = append(n.drops, &dropRule{to: to.Name(), typ: typ, n: k})
}

// duplicate makes every message delivered twice from now on.
func (n *fakeNet) duplicate(on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dup = on
}

// holdIf holds, from now on, every message for which match is true
// (instead of queueing it) until release. Held Ack and Sync sends block.
func (n *fakeNet) holdIf(match func(e *envelope) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hold = match
}

// holdTo holds every message sent to node to.
func (n *fakeNet) holdTo(to *fakeNode) {
	n.holdIf(func(e *envelope) bool { return e.to == to })
}

// release stops holding and delivers the held messages in reverse order.
func (n *fakeNet) release() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hold = nil
	if n.closed {
		return
	}
	for i := len(n.held) - 1; i >= 0; i-- {
		n.enqueue(n.held[i])
	}
	n.held = nil
	n.notify()
}

// heldCount is the number of messages being held.
func (n *fakeNet) heldCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.held)
}

// idle reports whether no message is queued, being handled or held.
func (n *fakeNet) idle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inflight == 0 && len(n.held) == 0
}

// count is the number of messages of type typ from one node to another that
// were handed to the receiver's handler (counted before it runs).
func (n *fakeNet) count(from, to *fakeNode, typ flock.MessageType) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.delivered[countKey{from.Name(), to.Name(), typ}]
}

// waitFor waits until cond is true, checking it after every event of the
// network. Conditions that change without a network event (counters that a
// manager goroutine updates after a handler ran, expiry) are also checked
// every few milliseconds: there is no event to wait on for those. It fails
// the test after 10 seconds.
func (n *fakeNet) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	recheck := time.NewTicker(5 * time.Millisecond)
	defer recheck.Stop()
	for {
		ev := n.events()
		if cond() {
			return
		}
		select {
		case <-ev:
		case <-recheck.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// fakeNode is one node of a fakeNet: a Cluster.
type fakeNode struct {
	net    *fakeNet
	member membership.Member

	hmu      sync.RWMutex
	handlers map[flock.MessageType]flock.Handler

	// under net.mu
	joined, up bool
}

var _ Cluster = (*fakeNode)(nil)

func (nd *fakeNode) Name() string { return nd.member.Name }

// join makes the node a member: the others list it and can send to it.
func (nd *fakeNode) join() {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	nd.joined = true
	nd.net.notify()
}

// setUp takes the node down (false: the others stop listing it, sends to
// and from it fail) or back up.
func (nd *fakeNode) setUp(up bool) {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	nd.up = up
	nd.net.notify()
}

// isMember reports whether the others see the node; net.mu must be held.
func (nd *fakeNode) isMember() bool { return nd.joined && nd.up }

func (nd *fakeNode) handler(t flock.MessageType) flock.Handler {
	nd.hmu.RLock()
	defer nd.hmu.RUnlock()
	return nd.handlers[t]
}

func (nd *fakeNode) Local() membership.Member { return nd.member }

func (nd *fakeNode) Members() []membership.Status {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	var out []membership.Status
	for _, o := range nd.net.nodes {
		if o != nd && o.isMember() {
			out = append(out, membership.Status{Member: o.member, State: membership.Alive, LastSeen: time.Now()})
		}
	}
	return out
}

func (nd *fakeNode) Handle(t flock.MessageType, h flock.Handler) {
	nd.hmu.Lock()
	defer nd.hmu.Unlock()
	nd.handlers[t] = h
}

func (nd *fakeNode) Broadcast(ctx context.Context, t flock.MessageType, payload []byte, mode flock.Mode) error {
	ms := nd.Members()
	to := make([]membership.Member, len(ms))
	for i, m := range ms {
		to[i] = m.Member
	}
	return nd.Send(ctx, to, t, payload, mode)
}

// Send queues payload for every member of to, then waits for all of them
// as mode says (which is as parallel as the real sender).
func (nd *fakeNode) Send(ctx context.Context, to []membership.Member, t flock.MessageType, payload []byte, mode flock.Mode) error {
	n := nd.net
	var errs []error
	var sent []*envelope
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errClosed
	}
	for _, m := range to {
		var dst *fakeNode
		for _, o := range n.nodes {
			if o.member.ID == m.ID {
				dst = o
			}
		}
		if dst == nil || !dst.isMember() || !nd.up {
			errs = append(errs, fmt.Errorf("send to %s: %w", m.Name, errDown))
			continue
		}
		e := &envelope{
			from: nd, to: dst, mode: mode,
			msg:   flock.Message{From: nd.member, Type: t, Payload: payload},
			taken: make(chan struct{}), done: make(chan struct{}),
		}
		if n.dropping(dst, t) {
			n.finalize(e, nil)
			n.notify()
			continue
		}
		sent = append(sent, e)
		if n.hold != nil && n.hold(e) {
			n.held = append(n.held, e)
			n.notify()
			continue
		}
		n.enqueue(e)
	}
	n.mu.Unlock()

	for _, e := range sent {
		var wait <-chan struct{}
		switch mode {
		case flock.Ack:
			wait = e.taken
		case flock.Sync:
			wait = e.done
		default:
			continue
		}
		select {
		case <-wait:
			if lost, err := e.result(n); err != nil && (mode == flock.Sync || lost) {
				errs = append(errs, fmt.Errorf("send to %s: %w", e.to.Name(), err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("send to %s: %w", e.to.Name(), ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// result reads e's error, and whether it was lost, under the network's
// lock (an Ack send may read it before the handler has run: no error yet).
func (e *envelope) result(n *fakeNet) (lost bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !e.finalized {
		return false, nil
	}
	return e.lost, e.err
}

// dropping consumes one drop of a rule matching (to, t); n.mu must be held.
func (n *fakeNet) dropping(to *fakeNode, t flock.MessageType) bool {
	for _, r := range n.drops {
		if r.to == to.Name() && r.typ == t && r.n > 0 {
			r.n--
			return true
		}
	}
	return false
}

// testCluster is a fakeNet with a started Manager on each node.
type testCluster struct {
	t     testing.TB
	net   *fakeNet
	nodes []*fakeNode
	ms    []*Manager
	recs  []*recorder
}

// testConfig is the base configuration of the tests' managers.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.SessionTimeout = time.Minute
	cfg.Replication = flock.Sync
	cfg.RequestTimeout = 5 * time.Second
	cfg.StateTransferTimeout = 10 * time.Second
	return cfg
}

// newCluster starts one manager per name (each name is also the node's
// route), with cfg and then tweak applied to it, and waits until every one
// is ready. The managers are stopped when the test ends, before the network
// closes, in the order of a real shutdown.
func newCluster(t testing.TB, cfg Config, names ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: newFakeNet(t)}
	for _, name := range names {
		c.add(name, cfg)
	}
	for _, nd := range c.nodes {
		nd.join()
	}
	for i := range c.ms {
		c.start(i)
	}
	for _, m := range c.ms {
		c.ready(m)
	}
	return c
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
		m.reqMu.Lock()
		n := len(m.requests)
		m.reqMu.Unlock()
		if n > 0 || len(m.repairs) > 0 {
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
	r.net.mu.Lock()
	r.net.notify()
	r.net.mu.Unlock()
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

// TestFakeNet checks the fake's own promises: order per pair, the three
// modes, drops, duplicates, reversed release and nodes going down.
func TestFakeNet(t *testing.T) {
	leakcheck.Check(t)
	n := newFakeNet(t)
	a, b := n.addNode("A"), n.addNode("B")
	const typ = flock.FirstType + 100
	var mu sync.Mutex
	var got []string
	block := make(chan struct{})
	b.Handle(typ, func(ctx context.Context, m flock.Message) error {
		if string(m.Payload) == "block" {
			<-block
		}
		if string(m.Payload) == "fail" {
			return errors.New("handler failed")
		}
		mu.Lock()
		got = append(got, string(m.Payload))
		mu.Unlock()
		return nil
	})
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
	to := []membership.Member{b.Local()}
	ctx := context.Background()

	if err := a.Send(ctx, to, typ, []byte("x"), flock.Sync); !errors.Is(err, errDown) {
		t.Fatalf("send to a node that has not joined: %v", err)
	}
	a.join()
	b.join()
	if ms := a.Members(); len(ms) != 1 || ms[0].Name != "B" {
		t.Fatalf("A's members: %v", ms)
	}
	for i := range 20 {
		if err := a.Send(ctx, to, typ, []byte{byte('a' + i)}, flock.Async); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Send(ctx, to, typ, []byte("sync"), flock.Sync); err != nil {
		t.Fatal(err)
	}
	if r := received(); len(r) != 21 || r[0] != "a" || r[19] != "t" || r[20] != "sync" {
		t.Fatalf("order: %v", r)
	}
	if err := a.Send(ctx, to, typ, []byte("fail"), flock.Sync); err == nil {
		t.Fatal("Sync send did not return the handler's error")
	}
	if err := a.Send(ctx, to, typ, []byte("fail"), flock.Ack); err != nil {
		t.Fatalf("Ack send returned the handler's error: %v", err)
	}
	acked := make(chan error, 1)
	go func() { acked <- a.Send(ctx, to, typ, []byte("block"), flock.Ack) }()
	select { // the Ack returns while the handler is still blocked
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an Ack send waited for the handler")
	}
	close(block)

	n.dropNext(b, typ, 2)
	n.duplicate(true)
	for _, p := range []string{"d1", "d2", "dup"} {
		if err := a.Send(ctx, to, typ, []byte(p), flock.Sync); err != nil {
			t.Fatal(err)
		}
	}
	n.duplicate(false)
	if r := received(); !slices.Equal(r[len(r)-3:], []string{"block", "dup", "dup"}) {
		t.Fatalf("drops and duplicates: %v", r[len(r)-3:])
	}

	n.holdTo(b)
	for _, p := range []string{"h1", "h2", "h3"} {
		if err := a.Send(ctx, to, typ, []byte(p), flock.Async); err != nil {
			t.Fatal(err)
		}
	}
	if n.heldCount() != 3 {
		t.Fatalf("held %d", n.heldCount())
	}
	n.release()
	n.waitFor(t, "released", func() bool { return len(received()) >= 27 })
	if r := received(); !slices.Equal(r[len(r)-3:], []string{"h3", "h2", "h1"}) {
		t.Fatalf("release order: %v", r[len(r)-3:])
	}

	b.setUp(false)
	if len(a.Members()) != 0 {
		t.Fatal("a down node is still listed")
	}
	if err := a.Send(ctx, to, typ, []byte("x"), flock.Async); !errors.Is(err, errDown) {
		t.Fatalf("send to a down node: %v", err)
	}
	if err := a.Broadcast(ctx, typ, []byte("x"), flock.Sync); err != nil {
		t.Fatalf("broadcast without members: %v", err)
	}
}
