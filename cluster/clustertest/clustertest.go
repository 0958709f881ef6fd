// Package clustertest is an in-process network for testing what runs on a
// cluster: the session manager, the valve, the admin endpoints, or a user's
// handlers. Each Node is a real *cluster.Cluster whose membership, sender and
// receiver are in memory, so a test drives the same code paths as a real
// node, without sockets, and with faults on demand: a message dropped,
// duplicated, held and then delivered out of order, a node taken down (the
// others see it fail) and brought back (they see it rejoin).
//
// Messages from one node to another are delivered in send order by one
// goroutine per (sender, receiver) pair, so the handlers of one sender run
// one at a time and in order, as with the TCP transport. Async sends return
// at once; Ack sends when the pair's goroutine has taken the message (before
// the handler runs); Sync sends and requests when the handler has returned,
// with its error or reply. Every delivery, drop, hold and release is an event
// a test can wait on (WaitFor).
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flockhq/flock/cluster"
	"github.com/flockhq/flock/internal/eventq"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// Errors of the in-memory network, inside the *sender.Error of a send.
var (
	ErrDown   = errors.New("clustertest: node is down")
	ErrClosed = errors.New("clustertest: network closed")
)

// Network is an in-process network of nodes. The zero value is not usable;
// call New.
type Network struct {
	ctx    context.Context // handlers' context; cancelled by Close
	cancel context.CancelFunc
	base   time.Time
	wg     sync.WaitGroup // the pair goroutines

	mu        sync.Mutex
	closed    bool
	nodes     []*Node
	pairs     map[[2]*Node]*pair
	drops     []*dropRule
	dup       bool
	hold      func(Envelope) bool
	held      []*envelope
	delivered map[countKey]int // messages handed to a handler, by (from, to, type)
	bytes     map[countKey]int // their payload and reply bytes
	inflight  int              // queued or being handled
	event     chan struct{}    // closed and replaced on every event
}

type countKey struct {
	from, to string
	typ      cluster.MessageType
}

type dropRule struct {
	to  string
	typ cluster.MessageType
	n   int
}

// Envelope describes a message on its way, for HoldIf.
type Envelope struct {
	From, To *Node
	Type     cluster.MessageType
	Mode     sender.Mode
	Request  bool
}

// envelope is one message on its way to one node.
type envelope struct {
	Envelope
	payload   []byte
	taken     chan struct{} // closed when the pair goroutine took it (Ack)
	done      chan struct{} // closed when its handler returned (Sync)
	reply     []byte        // the handler's answer; set before done is closed
	err       error         // the handler's, or why it was not delivered; set before done is closed
	lost      bool          // not delivered (down, network closed)
	queued    bool          // counted in Network.inflight
	finalized bool          // under Network.mu
}

type pair struct {
	queue []*envelope
	wake  chan struct{} // cap 1
}

// New returns an empty network. Close it when the test ends, after the
// clusters built on it have been stopped.
func New() *Network {
	ctx, cancel := context.WithCancel(context.Background())
	return &Network{
		ctx: ctx, cancel: cancel, base: time.Now(),
		pairs:     make(map[[2]*Node]*pair),
		delivered: make(map[countKey]int),
		bytes:     make(map[countKey]int),
		event:     make(chan struct{}),
	}
}

// AddNode adds a node named name. It is not a member (the others do not list
// it, and sends to it fail) until Join. Nodes added earlier are older (their
// Started is earlier); a name used before makes a new run of that node, with
// a new member id.
func (n *Network) AddNode(name string) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	i := len(n.nodes)
	nd := &Node{
		net: n,
		member: membership.Member{
			ID:      membership.ID{byte(i>>8) + 1, byte(i)},
			Name:    name,
			Domain:  "test",
			Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(4000+i)),
			Started: n.base.Add(time.Duration(i) * time.Millisecond),
		},
		handlers:    make(map[uint8]receiver.Handler),
		events:      eventq.New[membership.Event](1024),
		up:          true,
		handledWake: make(chan struct{}),
	}
	nd.cluster = cluster.FromParts(nd.member, cluster.Parts{
		Members: (*members)(nd), Sender: (*send)(nd), Receiver: (*recv)(nd),
	}, nil)
	n.nodes = append(n.nodes, nd)
	return nd
}

// Nodes are the nodes added so far, in the order they were added.
func (n *Network) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

// Close stops every pair goroutine; messages not yet handled fail.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.cancel()
	for _, e := range n.held {
		n.fail(e, ErrClosed)
	}
	n.held = nil
	for _, p := range n.pairs {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	n.notify()
	n.mu.Unlock()
	n.wg.Wait()
}

// notify wakes the waiters of WaitFor; n.mu must be held.
func (n *Network) notify() {
	close(n.event)
	n.event = make(chan struct{})
}

// Changed returns a channel closed at the next event of the network.
func (n *Network) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.event
}

// finalize ends e (err and reply are the handler's); n.mu must be held.
func (n *Network) finalize(e *envelope, reply []byte, err error) {
	if e.finalized {
		return
	}
	e.finalized = true
	e.reply, e.err = reply, err
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
func (n *Network) fail(e *envelope, err error) {
	if !e.finalized {
		e.lost = true
	}
	n.finalize(e, nil, err)
}

// enqueue puts e on its pair's queue, starting the pair goroutine on first
// use; n.mu must be held.
func (n *Network) enqueue(e *envelope) {
	key := [2]*Node{e.From, e.To}
	p := n.pairs[key]
	if p == nil {
		p = &pair{wake: make(chan struct{}, 1)}
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
func (n *Network) deliver(p *pair) {
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
				n.fail(e, ErrClosed)
			}
			p.queue = nil
			n.mu.Unlock()
			return
		}
		e := p.queue[0]
		p.queue = p.queue[1:]
		if !e.To.isMember() {
			n.fail(e, ErrDown)
			n.notify()
			n.mu.Unlock()
			continue
		}
		times := 1
		if n.dup {
			times = 2
		}
		close(e.taken)
		n.delivered[countKey{e.From.Name(), e.To.Name(), e.Type}]++
		n.bytes[countKey{e.From.Name(), e.To.Name(), e.Type}] += len(e.payload)
		n.mu.Unlock()

		h := e.To.handler(uint8(e.Type))
		var reply []byte
		var err error
		for i := range times {
			var r []byte
			var herr error
			if h == nil {
				herr = fmt.Errorf("clustertest: %s has no handler for type %d", e.To.Name(), e.Type)
			} else {
				msg := receiver.Message{From: e.From.member, Type: uint8(e.Type), Payload: slices.Clone(e.payload)}
				r, herr = h(n.ctx, msg)
			}
			if i == 0 {
				reply, err = r, herr
			}
		}

		n.mu.Lock()
		n.bytes[countKey{e.From.Name(), e.To.Name(), e.Type}] += len(reply)
		n.finalize(e, reply, err)
		n.notify()
		n.mu.Unlock()
	}
}

// DropNext drops the next k messages of type t sent to node to. The sender
// does not notice (as with a message lost after it was acknowledged).
func (n *Network) DropNext(to *Node, t cluster.MessageType, k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drops = append(n.drops, &dropRule{to: to.Name(), typ: t, n: k})
}

// Duplicate makes every message delivered twice from now on (or no more).
// The first delivery's outcome is the sender's.
func (n *Network) Duplicate(on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dup = on
}

// HoldIf holds, from now on, every message for which match is true (instead
// of queueing it) until Release. Held Ack and Sync sends and requests block.
func (n *Network) HoldIf(match func(Envelope) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hold = match
}

// HoldTo holds every message sent to node to.
func (n *Network) HoldTo(to *Node) {
	n.HoldIf(func(e Envelope) bool { return e.To == to })
}

// Release stops holding and delivers the held messages in reverse order.
func (n *Network) Release() {
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

// HeldCount is the number of messages being held.
func (n *Network) HeldCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.held)
}

// Idle reports whether no message is queued, being handled or held.
func (n *Network) Idle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inflight == 0 && len(n.held) == 0
}

// Count is the number of messages of type t from one node to another that
// were handed to the receiver's handler (counted before it runs).
func (n *Network) Count(from, to *Node, t cluster.MessageType) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.delivered[countKey{from.Name(), to.Name(), t}]
}

// Bytes is the payload bytes of the messages of type t from one node to
// another handed to the receiver's handler, plus those of the replies
// (answers to requests) their handler returned.
func (n *Network) Bytes(from, to *Node, t cluster.MessageType) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bytes[countKey{from.Name(), to.Name(), t}]
}

// WaitFor waits until cond is true, checking it after every event of the
// network and every few milliseconds (for conditions that change without a
// network event, such as counters a goroutine updates after a handler ran).
// It fails the test after 10 seconds.
func (n *Network) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	recheck := time.NewTicker(5 * time.Millisecond)
	defer recheck.Stop()
	for {
		ev := n.Changed()
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

// dropping consumes one drop of a rule matching (to, t); n.mu must be held.
func (n *Network) dropping(to *Node, t cluster.MessageType) bool {
	for _, r := range n.drops {
		if r.to == to.Name() && r.typ == t && r.n > 0 {
			r.n--
			return true
		}
	}
	return false
}

// Node is one node of a Network.
type Node struct {
	net     *Network
	member  membership.Member
	cluster *cluster.Cluster
	events  *eventq.Queue[membership.Event]

	hmu      sync.RWMutex
	handlers map[uint8]receiver.Handler

	// under net.mu
	joined, up bool
	running    bool          // membership started, not stopped
	stop       chan struct{} // ends the event queue
	queueDone  chan struct{}
	pushed     uint64 // events pushed to the node's queue

	// under hmu: events the node's cluster has handled
	handled     uint64
	handledWake chan struct{} // closed and replaced when handled grows
}

// Name is the node's name.
func (nd *Node) Name() string { return nd.member.Name }

// Member is the member the node is.
func (nd *Node) Member() membership.Member { return nd.member }

// Cluster is the node's cluster, to build a manager on. Its Start starts the
// node's membership (the node does not join by starting: call Join); its
// Stop makes the node leave.
func (nd *Node) Cluster() *cluster.Cluster { return nd.cluster }

// Join makes the node a member: the others list it (Joined) and can send to
// it. Like Leave and SetUp, it returns once every other node whose cluster
// runs has handed the event to its subscribers: a change of membership is
// synchronous for the test.
func (nd *Node) Join() {
	n := nd.net
	n.mu.Lock()
	if nd.joined {
		n.mu.Unlock()
		return
	}
	was := nd.isMember()
	nd.joined = true
	wait := n.changed(nd, was, membership.Joined, "joined")
	n.mu.Unlock()
	wait()
}

// Leave takes the node out of the cluster as a goodbye would: the others
// see it leave.
func (nd *Node) Leave() {
	n := nd.net
	n.mu.Lock()
	was := nd.isMember()
	nd.joined = false
	wait := n.changed(nd, was, membership.Left, "leaving")
	n.mu.Unlock()
	wait()
}

// SetUp takes the node down (false: the others see it fail, sends to and
// from it fail) or brings it back (true: the others see the same member
// rejoin, as after a pause).
func (nd *Node) SetUp(up bool) {
	n := nd.net
	n.mu.Lock()
	was := nd.isMember()
	nd.up = up
	var wait func()
	if up {
		wait = n.changed(nd, was, membership.Rejoined, "back after a pause")
	} else {
		wait = n.changed(nd, was, membership.Failed, "down")
	}
	n.mu.Unlock()
	wait()
}

// Isolate cuts the node off (true) or heals the cut (false), as a
// partition of its link would: like SetUp, and the node itself sees every
// other member fail, then rejoin, as its own membership would.
func (nd *Node) Isolate(cut bool) {
	n := nd.net
	n.mu.Lock()
	was := nd.isMember()
	nd.up = !cut
	typ, reason := membership.Failed, "cut off"
	if !cut {
		typ, reason = membership.Rejoined, "partition healed"
	}
	wait := n.changed(nd, was, typ, reason)
	var mine uint64
	if nd.isMember() != was {
		for _, o := range n.nodes {
			if o != nd && o.joined && o.up {
				nd.events.Push(membership.Event{Type: typ, Member: o.member, Time: time.Now(), Reason: reason})
				nd.pushed++
			}
		}
		mine = nd.pushed
		n.notify()
	}
	running := nd.running
	n.mu.Unlock()
	wait()
	if running && mine > 0 {
		nd.awaitHandled(mine)
	}
}

// changed tells every other node that nd's membership changed from was, if
// it did; n.mu must be held. It returns a wait for the nodes whose cluster
// is running to have handed the event to their subscribers; call it after
// n.mu is released.
func (n *Network) changed(nd *Node, was bool, typ membership.EventType, reason string) (wait func()) {
	if nd.isMember() == was {
		return func() {}
	}
	e := membership.Event{Type: typ, Member: nd.member, Time: time.Now(), Reason: reason}
	type mark struct {
		o   *Node
		seq uint64
	}
	var marks []mark
	for _, o := range n.nodes {
		if o == nd {
			continue
		}
		o.events.Push(e)
		o.pushed++
		if o.running {
			marks = append(marks, mark{o, o.pushed})
		}
	}
	n.notify()
	return func() {
		for _, m := range marks {
			m.o.awaitHandled(m.seq)
		}
	}
}

// awaitHandled waits until the node's cluster has handled its seq-th event,
// or stopped, or 10 s have passed (a test that floods the event queue past
// its bound loses events, and must not hang for it).
func (nd *Node) awaitHandled(seq uint64) {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		nd.hmu.Lock()
		done, wake := nd.handled >= seq, nd.handledWake
		nd.hmu.Unlock()
		if done {
			return
		}
		select {
		case <-wake:
		case <-nd.queueDone:
			return
		case <-deadline.C:
			return
		}
	}
}

// isMember reports whether the others see the node; net.mu must be held.
func (nd *Node) isMember() bool { return nd.joined && nd.up }

func (nd *Node) handler(t uint8) receiver.Handler {
	nd.hmu.RLock()
	defer nd.hmu.RUnlock()
	return nd.handlers[t]
}

// members is the node's membership.Service.
type members Node

var _ membership.Service = (*members)(nil)

func (m *members) Start(ctx context.Context) error {
	nd := (*Node)(m)
	n := nd.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd.running || nd.stop != nil {
		return errors.New("clustertest: membership already started")
	}
	nd.running = true
	nd.stop, nd.queueDone = make(chan struct{}), make(chan struct{})
	go func() { defer close(nd.queueDone); nd.events.Run(nd.stop) }()
	return nil
}

func (m *members) Stop(ctx context.Context) error {
	nd := (*Node)(m)
	n := nd.net
	n.mu.Lock()
	running := nd.running
	nd.running = false
	wait := func() {}
	if running {
		was := nd.isMember()
		nd.joined = false
		wait = n.changed(nd, was, membership.Left, "stopped")
		close(nd.stop)
	}
	n.mu.Unlock()
	if !running {
		return nil
	}
	wait()
	select {
	case <-nd.queueDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *members) Local() membership.Member { return m.member }

func (m *members) Members() []membership.Status {
	nd := (*Node)(m)
	n := nd.net
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []membership.Status
	for _, o := range n.nodes {
		if o != nd && o.isMember() {
			out = append(out, membership.Status{Member: o.member, State: membership.Alive, LastSeen: time.Now()})
		}
	}
	slices.SortFunc(out, func(a, b membership.Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *members) Events() <-chan membership.Event { return m.events.Out() }

// Handled counts the events the node's cluster has handed to its
// subscribers, for the waits of Join, Leave and SetUp.
func (m *members) Handled(membership.Event) {
	m.hmu.Lock()
	m.handled++
	close(m.handledWake)
	m.handledWake = make(chan struct{})
	m.hmu.Unlock()
}

func (m *members) Stats() membership.Stats {
	return membership.Stats{EventsDropped: m.events.Dropped()}
}

// recv is the node's receiver.Receiver.
type recv Node

var _ receiver.Receiver = (*recv)(nil)

func (r *recv) Handle(t uint8, h receiver.Handler) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	r.handlers[t] = h
}

func (r *recv) Start()                         {}
func (r *recv) Stop(ctx context.Context) error { return nil }
func (r *recv) Stats() receiver.Stats          { return receiver.Stats{} }

// send is the node's sender.Sender.
type send Node

var _ sender.Sender = (*send)(nil)

// Send queues payload for every address of to, then waits for all of them
// as mode says (which is as parallel as the real sender).
func (s *send) Send(ctx context.Context, to []netip.AddrPort, t uint8, payload []byte, mode sender.Mode) error {
	es, errs := (*Node)(s).post(to, t, payload, mode, false)
	for _, e := range es {
		var wait <-chan struct{}
		switch mode {
		case sender.Ack:
			wait = e.taken
		case sender.Sync:
			wait = e.done
		default:
			continue
		}
		// What has arrived counts even after ctx ended: the peers are
		// waited for in parallel, as by the real sender.
		select {
		case <-wait:
		case <-ctx.Done():
		}
		select {
		case <-wait:
			if lost, err := e.result(s.net); err != nil && (mode == sender.Sync || lost) {
				errs = append(errs, peerError(e.To.member.Addr, lost, err))
			}
		default:
			errs = append(errs, sender.PeerError{Addr: e.To.member.Addr, Err: ctx.Err()})
		}
	}
	if len(errs) > 0 {
		return &sender.Error{Peers: errs}
	}
	return nil
}

// Request sends payload to one node and waits for its handler's reply.
func (s *send) Request(ctx context.Context, to netip.AddrPort, t uint8, payload []byte) ([]byte, error) {
	es, errs := (*Node)(s).post([]netip.AddrPort{to}, t, payload, sender.Sync, true)
	if len(errs) > 0 {
		return nil, &sender.Error{Peers: errs}
	}
	if len(es) == 0 {
		return nil, nil // dropped: the reply is lost with it
	}
	e := es[0]
	select {
	case <-e.done:
		lost, err := e.result(s.net)
		if err != nil {
			return nil, &sender.Error{Peers: []sender.PeerError{peerError(to, lost, err)}}
		}
		return e.reply, nil
	case <-ctx.Done():
		return nil, &sender.Error{Peers: []sender.PeerError{{Addr: to, Err: ctx.Err()}}}
	}
}

func peerError(addr netip.AddrPort, lost bool, err error) sender.PeerError {
	if !lost {
		err = &sender.RemoteError{Msg: err.Error()}
	}
	return sender.PeerError{Addr: addr, Err: err}
}

// post queues (or holds, or drops) one envelope per address; it returns
// those that went on their way, and the failures.
func (nd *Node) post(to []netip.AddrPort, t uint8, payload []byte, mode sender.Mode, request bool) ([]*envelope, []sender.PeerError) {
	n := nd.net
	var errs []sender.PeerError
	var sent []*envelope
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		for _, a := range to {
			errs = append(errs, sender.PeerError{Addr: a, Err: ErrClosed})
		}
		return nil, errs
	}
	for _, a := range to {
		var dst *Node
		for _, o := range n.nodes {
			if o.member.Addr == a && o.isMember() {
				dst = o
			}
		}
		if dst == nil || !nd.up {
			errs = append(errs, sender.PeerError{Addr: a, Err: ErrDown})
			continue
		}
		e := &envelope{
			Envelope: Envelope{From: nd, To: dst, Type: cluster.MessageType(t), Mode: mode, Request: request},
			payload:  payload,
			taken:    make(chan struct{}), done: make(chan struct{}),
		}
		if n.dropping(dst, e.Type) {
			n.finalize(e, nil, nil)
			n.notify()
			if request {
				// A request whose message is lost times out at the
				// requester: keep it waiting for its context.
				e = &envelope{Envelope: e.Envelope, taken: make(chan struct{}), done: make(chan struct{})}
				sent = append(sent, e)
			}
			continue
		}
		sent = append(sent, e)
		if n.hold != nil && n.hold(e.Envelope) {
			n.held = append(n.held, e)
			n.notify()
			continue
		}
		n.enqueue(e)
	}
	return sent, errs
}

// result reads e's outcome under the network's lock (an Ack send may read
// it before the handler has run: no error yet).
func (e *envelope) result(n *Network) (lost bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !e.finalized {
		return false, nil
	}
	return e.lost, e.err
}

// Ping answers for a node that is up and a member.
func (s *send) Ping(ctx context.Context, addr netip.AddrPort) (membership.Member, error) {
	n := s.net
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.nodes {
		if o.member.Addr == addr && o.up {
			return o.member, nil
		}
	}
	return membership.Member{}, ErrDown
}

func (s *send) Leave(ctx context.Context, addr netip.AddrPort) error { return nil }
func (s *send) Forget(addr netip.AddrPort)                           {}
func (s *send) Drain(ctx context.Context) error                      { return nil }
func (s *send) Close(ctx context.Context) error                      { return nil }
func (s *send) Stats() []sender.PeerStats                            { return nil }
