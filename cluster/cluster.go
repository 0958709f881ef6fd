// Package cluster ties membership (who is there) to the transport (sending
// them messages) for the parts of flock above it: the session manager
// registers a handler per message type, sends one-way messages and requests,
// and hears of members joining, leaving and failing.
//
// A Cluster is built either from a Config (New: a TCP receiver and sender and
// the membership service the Config names) or from parts already made
// (FromParts: the in-memory network of package clustertest, or a user's own
// transport).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
	"github.com/flockhq/flock/sender"
)

// MessageType names a kind of application message. Values below FirstType
// belong to the transport.
type MessageType uint8

// FirstType is the first MessageType an application may use.
const FirstType MessageType = MessageType(receiver.FirstType)

// Mode is how a send waits: Async (queued), Ack (read by the peer) or Sync
// (applied by the peer's handler). The names follow Tomcat's
// channelSendOptions.
type Mode = sender.Mode

// The send modes.
const (
	Async = sender.Async
	Ack   = sender.Ack
	Sync  = sender.Sync
)

// SendError is the error of a send that failed for some members: one
// PeerError each, by address.
type SendError = sender.Error

// PeerError is the failure of a send to one member.
type PeerError = sender.PeerError

// RemoteError is a member handler's error for a sync message.
type RemoteError = sender.RemoteError

// ParseMode reads a mode by its name: "async", "ack" or "sync".
func ParseMode(s string) (Mode, error) { return sender.ParseMode(s) }

// Message is an application message as a handler receives it.
type Message struct {
	From    membership.Member
	Type    MessageType
	Payload []byte // the handler's to keep
}

// Handler applies messages of one type. The messages of one sender are
// applied one at a time, in the order they were sent, on the reader of that
// sender's connection: a handler must never wait on another member. For a
// request (see Cluster.Request) the returned reply is the answer; for a Sync
// send a returned error is the sender's error; otherwise both are dropped.
type Handler func(ctx context.Context, m Message) (reply []byte, err error)

// Parts are what a Cluster is made of.
type Parts struct {
	Members  membership.Service
	Sender   sender.Sender
	Receiver receiver.Receiver
}

// Cluster is one node's view of and voice in its cluster.
type Cluster struct {
	log    logrus.FieldLogger
	local  membership.Member
	domain string
	parts  Parts

	mu          sync.Mutex
	started     bool
	stopped     bool
	subscribers []func(membership.Event)
	pump        chan struct{} // closed when the event pump has ended

	// addrs are the current members' addresses, the only ones Send and
	// Request reach: the sender keeps a peer (queue, connection) for
	// members only, so that no message, whoever claims to have sent it,
	// makes this node connect to an address of the sender's choosing.
	// Refreshed from Members on every event and on a miss.
	addrMu sync.Mutex
	addrs  map[netip.AddrPort]bool
}

// ErrNotMember: Send or Request named an address no member has.
var ErrNotMember = errors.New("not the address of a member")

// members reports which of addrs are members' addresses, reading the
// membership table again if one is not in the cached set.
func (c *Cluster) members(addrs []netip.AddrPort) []bool {
	c.addrMu.Lock()
	defer c.addrMu.Unlock()
	out := make([]bool, len(addrs))
	for refreshed := false; ; refreshed = true {
		missed := false
		for i, a := range addrs {
			out[i] = c.addrs[a]
			missed = missed || !out[i]
		}
		if !missed || refreshed {
			return out
		}
		c.refreshAddrsLocked()
	}
}

func (c *Cluster) refreshAddrsLocked() {
	ms := c.parts.Members.Members()
	set := make(map[netip.AddrPort]bool, len(ms))
	for _, m := range ms {
		set[m.Addr] = true
	}
	c.addrs = set
}

// FromParts builds a Cluster for local from parts made elsewhere; the
// Cluster owns them from now on (Stop stops them).
func FromParts(local membership.Member, p Parts, log logrus.FieldLogger) *Cluster {
	return &Cluster{log: logx.OrDiscard(log), local: local, domain: local.Domain, parts: p}
}

// New builds a Cluster from cfg: it binds the receiver's port (with
// auto-bind) so that the address it advertises is really this node's, and
// prepares the sender and membership. The node does not announce itself
// until Start.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: config: %w", err)
	}
	log := logx.OrDiscard(cfg.Logger)
	ln, err := receiver.Listen(ctx, cfg.Host, cfg.Port, cfg.AutoBind)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	id, err := membership.NewID()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	local := membership.Member{
		ID:      id,
		Name:    cfg.Name,
		Domain:  cfg.Domain,
		Zone:    cfg.Zone,
		Addr:    ln.Addr().(*net.TCPAddr).AddrPort(),
		Started: time.Now(),
	}
	c := &Cluster{log: log, local: local, domain: cfg.Domain}

	sc := cfg.Sender
	sc.Local = local
	sc.OnFailure = c.sendFailed
	sc.Logger = log
	sc.Keyring = cfg.Keyring
	if cfg.TLS != nil {
		sc.TLS = cfg.TLS.Client()
	}
	send := sender.New(sc)

	rc := cfg.Receiver
	rc.Local = local
	rc.Observer = observer{c}
	rc.Logger = log
	rc.Keyring = cfg.Keyring
	if cfg.TLS != nil {
		rc.TLS = cfg.TLS.Server()
	}
	recv := receiver.New(ln, rc)

	if cfg.Keyring == nil && !cfg.Host.IsLoopback() {
		log.WithField("address", cfg.Host).Warn("insecure: no cluster key; any host that reaches this network can read and change every session")
	}
	members, err := cfg.Membership(local, transport{send}, Env{Logger: log, Keyring: cfg.Keyring, Insecure: cfg.Insecure})
	if err != nil {
		ln.Close()
		send.Close(context.Background())
		return nil, fmt.Errorf("cluster: membership: %w", err)
	}
	c.parts = Parts{Members: members, Sender: send, Receiver: recv}
	return c, nil
}

// Handle registers h for messages of type t; call it before Start.
func (c *Cluster) Handle(t MessageType, h Handler) {
	c.parts.Receiver.Handle(uint8(t), func(ctx context.Context, m receiver.Message) ([]byte, error) {
		return h(ctx, Message{From: m.From, Type: MessageType(m.Type), Payload: m.Payload})
	})
}

// Subscribe has f called with every membership event, in order, after the
// cluster has acted on it (the connection of a member that left is closed
// first). f runs on the cluster's event goroutine: it must return quickly
// and never wait on the network. Call it before Start.
//
// Membership queues events for a slow reader and drops the oldest past its
// bound (counted in membership.Stats.EventsDropped); Members is always
// exact.
func (c *Cluster) Subscribe(f func(membership.Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscribers = append(c.subscribers, f)
}

// Start serves the receiver and announces this node to the cluster.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("cluster: already started")
	}
	c.parts.Receiver.Start()
	if err := c.parts.Members.Start(ctx); err != nil {
		// Not started: Stop (the caller's, or this one's) releases the
		// parts and waits for no event pump, which never ran.
		return fmt.Errorf("cluster: %w", err)
	}
	c.started = true
	c.pump = make(chan struct{})
	go c.runPump(c.subscribers)
	return nil
}

// runPump hands membership events to the subscribers, closing the
// connections of members that are gone first, so nothing more is queued for
// them.
func (c *Cluster) runPump(subs []func(membership.Event)) {
	defer close(c.pump)
	for e := range c.parts.Members.Events() {
		c.addrMu.Lock()
		c.refreshAddrsLocked()
		c.addrMu.Unlock()
		if e.Type == membership.Left || e.Type == membership.Failed {
			c.parts.Sender.Forget(e.Member.Addr)
		}
		for _, f := range subs {
			f(e)
		}
		if a, ok := c.parts.Members.(membership.Acknowledger); ok {
			a.Handled(e)
		}
	}
}

// Stop leaves the cluster: queued messages get until ctx ends to be
// delivered, membership says goodbye, then every connection closes. It
// returns when all the cluster's goroutines have ended.
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
		if err := c.parts.Sender.Drain(ctx); err != nil {
			c.log.WithError(err).Warn("leaving with messages undelivered")
		}
		errs = append(errs, c.parts.Members.Stop(ctx))
		select {
		case <-c.pump: // membership closed its events
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("event pump: %w", ctx.Err()))
		}
	} else {
		errs = append(errs, c.parts.Members.Stop(ctx))
	}
	errs = append(errs, c.parts.Sender.Close(ctx), c.parts.Receiver.Stop(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: stop: %w", err)
	}
	return nil
}

// Local is the member this node announces.
func (c *Cluster) Local() membership.Member { return c.local }

// Members is a snapshot of the other members, sorted by name.
func (c *Cluster) Members() []membership.Status { return c.parts.Members.Members() }

// Domain is the cluster domain this node belongs to.
func (c *Cluster) Domain() string { return c.domain }

// Send delivers payload to the given members, in parallel, waiting as mode
// says. The error, if any, is a *sender.Error naming each member it failed
// for.
func (c *Cluster) Send(ctx context.Context, to []membership.Member, t MessageType, payload []byte, mode Mode) error {
	if len(to) == 0 {
		return nil
	}
	addrs := make([]netip.AddrPort, 0, len(to))
	var refused []sender.PeerError
	for i, ok := range c.members(memberAddrs(to)) {
		if ok {
			addrs = append(addrs, to[i].Addr)
		} else {
			refused = append(refused, sender.PeerError{Addr: to[i].Addr, Err: fmt.Errorf("%s: %w", to[i].Name, ErrNotMember)})
		}
	}
	var err error
	if len(addrs) > 0 {
		err = c.parts.Sender.Send(ctx, addrs, uint8(t), payload, mode)
	}
	if len(refused) == 0 {
		return err
	}
	// One error for all, as the sender's: per address.
	var se *sender.Error
	if errors.As(err, &se) {
		refused = append(refused, se.Peers...)
	} else if err != nil {
		return errors.Join(err, &sender.Error{Peers: refused})
	}
	return &sender.Error{Peers: refused}
}

func memberAddrs(ms []membership.Member) []netip.AddrPort {
	out := make([]netip.AddrPort, len(ms))
	for i, m := range ms {
		out[i] = m.Addr
	}
	return out
}

// Broadcast sends payload to every current member.
func (c *Cluster) Broadcast(ctx context.Context, t MessageType, payload []byte, mode Mode) error {
	ms := c.parts.Members.Members()
	to := make([]membership.Member, len(ms))
	for i, m := range ms {
		to[i] = m.Member
	}
	return c.Send(ctx, to, t, payload, mode)
}

// Request sends payload to one member and returns its handler's reply. It
// fails when ctx ends first, when the member's handler returns an error
// (a *sender.RemoteError inside the *sender.Error), or when the member
// cannot be reached.
func (c *Cluster) Request(ctx context.Context, to membership.Member, t MessageType, payload []byte) ([]byte, error) {
	if !c.members([]netip.AddrPort{to.Addr})[0] {
		return nil, &sender.Error{Peers: []sender.PeerError{{Addr: to.Addr, Err: fmt.Errorf("%s: %w", to.Name, ErrNotMember)}}}
	}
	return c.parts.Sender.Request(ctx, to.Addr, uint8(t), payload)
}

// Stats are the counters of the cluster's parts.
type Stats struct {
	Membership membership.Stats
	Peers      []sender.PeerStats
	Receiver   receiver.Stats
}

// Stats returns the counters of membership (zeros if the service keeps
// none), the sender's per-peer and the receiver's.
func (c *Cluster) Stats() Stats {
	st := Stats{Peers: c.parts.Sender.Stats(), Receiver: c.parts.Receiver.Stats()}
	if r, ok := c.parts.Members.(membership.Reporter); ok {
		st.Membership = r.Stats()
	}
	return st
}

// sendFailed hands a failed send to membership, which checks whether the
// member is still there (it must not block: the sender calls it inline).
func (c *Cluster) sendFailed(addr netip.AddrPort, err error) {
	if s, ok := c.parts.Members.(membership.Suspecter); ok {
		s.SuspectAddr(addr)
	}
}

// transport lets membership ping and take leave of members over the
// cluster's sender.
type transport struct{ s sender.Sender }

func (t transport) Probe(ctx context.Context, addr netip.AddrPort) (membership.Member, error) {
	return t.s.Ping(ctx, addr)
}

func (t transport) Leave(ctx context.Context, addr netip.AddrPort) error {
	return t.s.Leave(ctx, addr)
}

// observer tells membership about members that called this node.
type observer struct{ c *Cluster }

func (o observer) Seen(m membership.Member)    { o.observe(m, false) }
func (o observer) Leaving(m membership.Member) { o.observe(m, true) }

func (o observer) observe(m membership.Member, leaving bool) {
	// parts is set after the receiver is built, but the receiver serves
	// nothing before Start.
	if s, ok := o.c.parts.Members.(membership.Observer); ok {
		s.Observe(m, leaving)
	}
}
