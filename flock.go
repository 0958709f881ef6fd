// Package flock is a cluster manager for replicated HTTP sessions. A
// Cluster, built from one configuration, ties membership (who is there) to
// the TCP transport (sending them messages); the session manager (package
// manager) runs on top of it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/eventq"
	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/wire"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// MessageType names a kind of application message; values from FirstType
// up are free for users of the Cluster.
type MessageType = wire.Type

// FirstType is the first MessageType an application may use.
const FirstType = wire.FirstApp

// Mode is how a send waits: Async (queued), Ack (read by the peer) or Sync
// (applied by the peer's handler). The names follow Tomcat's
// channelSendOptions.
type Mode = wire.Mode

const (
	Async = wire.Async
	Ack   = wire.Ack
	Sync  = wire.Sync
)

// Message is an application message as a handler receives it.
type Message struct {
	From    membership.Member
	Type    MessageType
	Payload []byte // the handler's to keep
}

// Handler applies messages of one type. The messages of one sender are
// applied one at a time, in the order they were sent. For a Sync send, a
// returned error is the sender's error.
type Handler func(ctx context.Context, m Message) error

// Cluster is one node's view of and voice in its cluster.
type Cluster struct {
	cfg     conf.Config
	log     logrus.FieldLogger
	local   membership.Member
	members membership.Service
	send    *sender.TCP
	recv    *receiver.Receiver
	events  *eventq.Queue[membership.Event]

	mu      sync.Mutex
	started bool
	stopped bool
	pump    chan struct{} // closed when the event pump has ended
	stopQ   chan struct{} // ends the event queue
}

// Option changes how New builds a Cluster.
type Option func(*options)

type options struct {
	log        logrus.FieldLogger
	membership func(local membership.Member) (membership.Service, error)
}

// WithLogger sends the cluster's logs to log instead of discarding them.
func WithLogger(log logrus.FieldLogger) Option { return func(o *options) { o.log = log } }

// WithMembership replaces the membership service the configuration names,
// for tests and for users who bring their own. build receives the local
// member (its receiver address is known only once the port is bound).
func WithMembership(build func(local membership.Member) (membership.Service, error)) Option {
	return func(o *options) { o.membership = build }
}

// New builds a Cluster from cfg. It binds the receiver's port (with
// auto-bind) so that the address it advertises is really this node's; the
// node does not announce itself until Start.
func New(ctx context.Context, cfg conf.Config, opts ...Option) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flock: config: %w", err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.log = logx.OrDiscard(o.log)
	host, err := cfg.Cluster.Receiver.HostAddr()
	if err != nil {
		return nil, fmt.Errorf("flock: %w", err)
	}
	ln, err := receiver.Listen(ctx, host, cfg.Cluster.Receiver.Port, cfg.Cluster.Receiver.AutoBind)
	if err != nil {
		return nil, fmt.Errorf("flock: %w", err)
	}
	id, err := membership.NewID()
	if err != nil {
		ln.Close()
		return nil, err
	}
	c := &Cluster{
		cfg: cfg,
		log: o.log,
		local: membership.Member{
			ID:      id,
			Name:    cfg.Server.Name,
			Domain:  cfg.Cluster.Domain,
			Addr:    ln.Addr().(*net.TCPAddr).AddrPort(),
			Started: time.Now(),
		},
		events: eventq.New[membership.Event](1024),
	}
	peer := toPeer(c.local)
	sc := sender.DefaultConfig()
	sc.Local = peer
	sc.Timeout = cfg.Cluster.Sender.Timeout.Duration
	sc.MaxRetries = cfg.Cluster.Sender.MaxRetries
	sc.QueueLimit = cfg.Cluster.Sender.QueueLimit.Bytes
	sc.MaxFrame = int(cfg.Cluster.Receiver.MaxFrame.Bytes)
	sc.OnFailure = c.sendFailed
	sc.Logger = o.log
	c.send = sender.New(sc)

	rc := receiver.DefaultConfig()
	rc.Local = peer
	rc.MaxFrame = int(cfg.Cluster.Receiver.MaxFrame.Bytes)
	rc.IdleTimeout = cfg.Cluster.Receiver.IdleTimeout.Duration
	rc.Observer = observer{c}
	rc.Logger = o.log
	c.recv = receiver.New(ln, rc)

	build := o.membership
	if build == nil {
		build = func(local membership.Member) (membership.Service, error) {
			return c.newMembership(local)
		}
	}
	if c.members, err = build(c.local); err != nil {
		ln.Close()
		c.send.Close(context.Background())
		return nil, fmt.Errorf("flock: %w", err)
	}
	return c, nil
}

func (c *Cluster) newMembership(local membership.Member) (membership.Service, error) {
	mc := c.cfg.Cluster.Membership
	switch mc.Type {
	case "multicast":
		group, err := mc.Group()
		if err != nil {
			return nil, err
		}
		bind, err := mc.BindAddr()
		if err != nil {
			return nil, err
		}
		m := membership.DefaultMulticastConfig()
		m.Group, m.Interface, m.TTL = group, bind, mc.TTL
		m.Frequency, m.DropTime = mc.Frequency.Duration, mc.DropTime.Duration
		if mc.ProbeTimeout.Duration > 0 {
			m.Prober, m.ProbeTimeout = prober{c}, mc.ProbeTimeout.Duration
		}
		m.Logger = c.log
		return membership.NewMulticast(local, m)
	case "static":
		peers, err := mc.Static.Addrs()
		if err != nil {
			return nil, err
		}
		s := membership.DefaultStaticConfig()
		s.Peers = peers
		s.Frequency, s.DropTime = mc.Frequency.Duration, mc.DropTime.Duration
		if mc.ProbeTimeout.Duration > 0 {
			s.ProbeTimeout = mc.ProbeTimeout.Duration
		}
		s.Prober, s.Leaver = prober{c}, c.send
		s.Logger = c.log
		return membership.NewStatic(local, s)
	}
	return nil, fmt.Errorf("cluster.membership.type %q has no implementation", mc.Type)
}

// Handle registers h for messages of type t; call it before Start.
func (c *Cluster) Handle(t MessageType, h Handler) {
	c.recv.Handle(t, func(ctx context.Context, m receiver.Message) error {
		return h(ctx, Message{From: toMember(m.From), Type: m.Type, Payload: m.Payload})
	})
}

// Start serves the receiver and announces this node to the cluster.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("flock: already started")
	}
	c.started = true
	c.recv.Start()
	if err := c.members.Start(ctx); err != nil {
		c.recv.Stop(context.Background())
		c.send.Close(context.Background())
		return fmt.Errorf("flock: %w", err)
	}
	c.pump = make(chan struct{})
	c.stopQ = make(chan struct{})
	go c.events.Run(c.stopQ)
	go c.runPump()
	return nil
}

// runPump passes membership events on to Events, closing the connections
// of members that are gone first, so nothing more is queued for them.
func (c *Cluster) runPump() {
	defer close(c.pump)
	for e := range c.members.Events() {
		if e.Type == membership.Left || e.Type == membership.Failed {
			c.send.Forget(e.Member.Addr)
		}
		c.events.Push(e)
	}
}

// Stop leaves the cluster: queued messages get until ctx ends to be
// delivered, membership says goodbye, then every connection closes. It returns
// when all the cluster's goroutines have ended.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	started := c.started
	c.mu.Unlock()

	var errs []error
	if started {
		// Deliver what is queued while the others still count this node
		// as a member, then say goodbye.
		if err := c.send.Drain(ctx); err != nil {
			c.log.WithError(err).Warn("leaving with messages undelivered")
		}
		errs = append(errs, c.members.Stop(ctx))
		<-c.pump // membership closed its events
		close(c.stopQ)
	}
	errs = append(errs, c.send.Close(ctx), c.recv.Stop(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flock: stop: %w", err)
	}
	return nil
}

// Local is the member this node announces.
func (c *Cluster) Local() membership.Member { return c.local }

// Members is a snapshot of the other members.
func (c *Cluster) Members() []membership.Status { return c.members.Members() }

// Events delivers membership changes after the cluster has acted on them;
// see membership.Service for the guarantees. It is closed after Stop.
func (c *Cluster) Events() <-chan membership.Event { return c.events.Out() }

// Domain is the cluster domain this node belongs to.
func (c *Cluster) Domain() string { return c.cfg.Cluster.Domain }

// Send delivers payload to the given members, in parallel, waiting as mode
// says; see sender.TCP.Send. The error, if any, is a *sender.Error naming
// each member it failed for.
func (c *Cluster) Send(ctx context.Context, to []membership.Member, t MessageType, payload []byte, mode Mode) error {
	addrs := make([]netip.AddrPort, len(to))
	for i, m := range to {
		addrs[i] = m.Addr
	}
	return c.send.Send(ctx, addrs, t, payload, mode)
}

// Broadcast sends payload to every current member.
func (c *Cluster) Broadcast(ctx context.Context, t MessageType, payload []byte, mode Mode) error {
	ms := c.members.Members()
	to := make([]membership.Member, len(ms))
	for i, m := range ms {
		to[i] = m.Member
	}
	return c.Send(ctx, to, t, payload, mode)
}

// MembershipStats returns the membership service's counters, or zeros if
// it keeps none.
func (c *Cluster) MembershipStats() membership.Stats {
	if s, ok := c.members.(interface{ Stats() membership.Stats }); ok {
		return s.Stats()
	}
	return membership.Stats{}
}

// TransportStats returns the sender's per-peer and the receiver's counters.
func (c *Cluster) TransportStats() ([]sender.PeerStats, receiver.Stats) {
	return c.send.Stats(), c.recv.Stats()
}

// sendFailed hands a failed send to membership, which checks whether the
// member is still there (it must not block: the sender calls it inline).
func (c *Cluster) sendFailed(addr netip.AddrPort, err error) {
	if s, ok := c.members.(interface{ SuspectAddr(netip.AddrPort) }); ok {
		s.SuspectAddr(addr)
	}
}

// prober lets membership ping members over the transport.
type prober struct{ c *Cluster }

func (p prober) Probe(ctx context.Context, addr netip.AddrPort) (membership.Member, error) {
	peer, err := p.c.send.Ping(ctx, addr)
	if err != nil {
		return membership.Member{}, err
	}
	return toMember(peer), nil
}

// observer tells membership about members that called this node.
type observer struct{ c *Cluster }

func (o observer) Seen(p wire.Peer)    { o.observe(p, false) }
func (o observer) Leaving(p wire.Peer) { o.observe(p, true) }

func (o observer) observe(p wire.Peer, leaving bool) {
	if s, ok := o.c.members.(interface{ Observe(membership.Member, bool) }); ok {
		s.Observe(toMember(p), leaving)
	}
}

func toPeer(m membership.Member) wire.Peer {
	return wire.Peer{ID: wire.ID(m.ID), Name: m.Name, Domain: m.Domain, Addr: m.Addr, Started: m.Started}
}

func toMember(p wire.Peer) membership.Member {
	return membership.Member{ID: membership.ID(p.ID), Name: p.Name, Domain: p.Domain, Addr: p.Addr, Started: p.Started}
}
