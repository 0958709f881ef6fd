package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/refuse"
	"github.com/flockhq/flock/internal/syncx"
	"github.com/flockhq/flock/keyring"
)

// GossipConfig configures a Gossip membership service.
type GossipConfig struct {
	// Bind is the address and port of gossip's own UDP and TCP sockets
	// (memberlist's), apart from the receiver's. Port 0 picks a free one
	// (tests). An unspecified address (0.0.0.0, ::) needs Advertise, so
	// that no interface is picked by the routing table.
	Bind netip.AddrPort
	// Advertise is the address the other members reach Bind at (NAT, a
	// container); the zero value is Bind.
	Advertise netip.AddrPort
	// Seeds are gossip addresses of members to join through; this node's
	// own may be among them. They are tried at Start, again every
	// JoinRetry until one join succeeds, and every ResolveEvery after
	// that, when they are not members (a partition that healed after the
	// members forgot each other).
	Seeds []netip.AddrPort
	// Resolve, if set, finds more seeds (DNS: see NewDNSResolver); it is
	// asked whenever the seeds are tried.
	Resolve      func(ctx context.Context) ([]netip.AddrPort, error)
	ResolveEvery time.Duration
	// JoinRetry is the first wait between failed joins; it doubles up to
	// a second (or ResolveEvery, if shorter).
	JoinRetry time.Duration
	// Frequency and DropTime are the cluster's failure detection timings,
	// as multicast's: gossip's probe interval and suspicion multiplier are
	// derived from them (see derive) unless set below.
	Frequency time.Duration
	DropTime  time.Duration
	// ProbeInterval, ProbeTimeout and SuspicionMult override memberlist's
	// timings derived from Frequency and DropTime; zero derives them.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	// Prober, if set, confirms over the transport, as multicast does, a
	// member that gossip has not confirmed alive for DropTime, or that a
	// send failed to reach (SuspectAddr), and settles name clashes.
	// Without it only gossip fails members.
	Prober Prober
	// Leaver, if set, tells every member over the transport that this
	// node leaves, before gossip does: the fastest goodbye.
	Leaver Leaver
	// TransportProbeTimeout bounds one probe by Prober.
	TransportProbeTimeout time.Duration
	// Keyring, if set, encrypts and authenticates every gossip packet and
	// stream, with keys derived from the ring's (the first encrypts, all
	// decrypt); rotations of the ring are followed.
	Keyring *keyring.Keyring
	// Insecure allows a non-loopback Bind or Advertise without a Keyring:
	// the network is trusted.
	Insecure    bool
	EventBuffer int
	Logger      logrus.FieldLogger
}

// DefaultGossipPort is memberlist's usual port, as Consul and Serf use it.
const DefaultGossipPort = 7946

// DefaultGossipConfig returns the defaults of conf/server.toml: gossip on
// loopback port 7946, multicast's timings, no seeds.
func DefaultGossipConfig() GossipConfig {
	return GossipConfig{
		Bind:                  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), DefaultGossipPort),
		ResolveEvery:          5 * time.Second,
		JoinRetry:             250 * time.Millisecond,
		Frequency:             500 * time.Millisecond,
		DropTime:              3 * time.Second,
		TransportProbeTimeout: time.Second,
		EventBuffer:           1024,
	}
}

// gossipKeyPurpose names the keys derived from the cluster ring for
// memberlist: never the ring's own keys (see keyring.Derive).
const gossipKeyPurpose = "gossip membership (memberlist AES-256-GCM)"

// timings are memberlist's failure detector settings.
type timings struct {
	probeInterval, probeTimeout time.Duration
	suspicionMult               int
}

// derive maps flock's timings onto SWIM's. Multicast fails a member after
// DropTime of silence. Under SWIM a dead member is first found by a probe
// (the next probe of it comes within about one ProbeInterval; it and its
// indirect probes take another), then suspected for SuspicionMult probe
// intervals (times log10 of the cluster size past 10 members, memberlist's
// guard against false positives in large clusters) before it is declared
// dead. So: ProbeInterval = Frequency, the ack waited for half of it (as
// memberlist's LAN defaults, 1s and 500ms), and SuspicionMult =
// DropTime/Frequency - 2, so that a small cluster detects a death in about
// DropTime (the defaults, 500ms and 3s, give memberlist's own 4).
func (c GossipConfig) derive() timings {
	t := timings{probeInterval: c.ProbeInterval, probeTimeout: c.ProbeTimeout, suspicionMult: c.SuspicionMult}
	if t.probeInterval <= 0 {
		t.probeInterval = c.Frequency
	}
	if t.probeTimeout <= 0 {
		t.probeTimeout = t.probeInterval / 2
	}
	if t.suspicionMult <= 0 && t.probeInterval > 0 {
		t.suspicionMult = max(1, int(c.DropTime/t.probeInterval)-2)
	}
	return t
}

func (c GossipConfig) validate() error {
	var errs []error
	switch {
	case !c.Bind.IsValid():
		errs = append(errs, errors.New("a bind address is required"))
	case c.Bind.Addr().IsMulticast():
		errs = append(errs, fmt.Errorf("bind %v: a multicast address", c.Bind))
	case c.Bind.Addr().IsUnspecified() && !c.Advertise.IsValid():
		errs = append(errs, fmt.Errorf("bind %v: an unspecified address needs an advertise address (which interface the others reach is not guessed)", c.Bind))
	}
	if c.Advertise.IsValid() && (c.Advertise.Addr().IsUnspecified() || c.Advertise.Addr().IsMulticast() || c.Advertise.Port() == 0) {
		errs = append(errs, fmt.Errorf("advertise %v: need a unicast address and a port", c.Advertise))
	}
	if c.Keyring == nil && !c.Insecure {
		for _, a := range []netip.AddrPort{c.Bind, c.Advertise} {
			if a.IsValid() && !a.Addr().IsLoopback() {
				errs = append(errs, fmt.Errorf("gossip address %v is not loopback, and there is no keyring: "+
					"anyone who reaches that network could join the cluster (set Keyring, or Insecure if the network is trusted)", a.Addr()))
				break
			}
		}
	}
	errs = append(errs, CheckTiming(c.Frequency, c.DropTime))
	if c.Prober != nil {
		errs = append(errs, CheckProbe(c.TransportProbeTimeout, c.DropTime))
	}
	if t := c.derive(); t.probeInterval <= 0 || t.probeTimeout <= 0 || t.probeTimeout >= t.probeInterval || t.suspicionMult < 1 {
		errs = append(errs, fmt.Errorf("probe interval %v, probe timeout %v, suspicion multiplier %d: need a timeout below the interval and a multiplier of at least 1",
			t.probeInterval, t.probeTimeout, t.suspicionMult))
	}
	if c.ResolveEvery <= 0 || c.JoinRetry <= 0 {
		errs = append(errs, fmt.Errorf("resolve interval %v, join retry %v: must be positive", c.ResolveEvery, c.JoinRetry))
	}
	if c.EventBuffer < 1 {
		errs = append(errs, fmt.Errorf("event buffer %d: need at least 1", c.EventBuffer))
	}
	return errors.Join(errs...)
}

// Gossip is membership by gossip (hashicorp/memberlist: SWIM with
// Lifeguard), for clusters past a few dozen nodes or across subnets, where
// multicast heartbeats cost too much or do not pass.
//
// memberlist finds and probes the members; the member table of every
// other implementation turns what it reports into flock's events, so the
// rules are the same: a member is a process (its memberlist name carries
// the member id), a restart is a new member, the first process keeps a
// name, a failed process heard again is Rejoined. A member gossip has not
// confirmed alive for DropTime, or that a send failed to reach, is probed
// over the transport as multicast's silent members are.
type Gossip struct {
	*core
	cfg  GossipConfig
	tm   timings
	meta []byte // the local member, as memberlist carries it

	// guarded by core.mu
	// view is what memberlist said of each node it holds, copied in its
	// callbacks: the nodes its Members returns are shared with its own
	// goroutines, which change them without a lock the caller can take.
	view    map[string]gossipNode
	pinging map[ID]time.Time // failed members being pinged, or last pinged
	keyIDs  []keyring.ID     // the ring's keys memberlist holds, in order
	mlKeys  *memberlist.Keyring

	warnLimit logx.Limiter

	runMu   sync.Mutex
	ml      *memberlist.Memberlist
	addr    netip.AddrPort // gossip's advertised address, once started
	started bool
	stopped bool
	// crashed: memberlist was shut down without a goodbye (a test's kill
	// -9); Stop then only releases the rest.
	crashed bool
	stop    chan struct{}
	loopWG  sync.WaitGroup // the join and watch loops, and pings
}

var (
	_ Service   = (*Gossip)(nil)
	_ Suspecter = (*Gossip)(nil)
	_ Reporter  = (*Gossip)(nil)
	_ Observer  = (*Gossip)(nil)
)

// gossipNode is a node memberlist holds.
type gossipNode struct {
	Heartbeat                // its metadata: the member, alive or leaving
	addr      netip.AddrPort // its gossip address
}

// NewGossip prepares a service that announces local. A zero local.ID or
// local.Started is filled in.
func NewGossip(local Member, cfg GossipConfig) (*Gossip, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("membership: gossip: %w", err)
	}
	local, err := fillLocal(local)
	if err != nil {
		return nil, err
	}
	meta, err := encodeGossipMeta(local, CommandAlive)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip: local member: %w", err)
	}
	reprobe := time.Duration(0)
	if cfg.Prober != nil {
		reprobe = 2 * cfg.Frequency
	}
	g := &Gossip{
		core:      newCore(local, cfg.DropTime, reprobe, cfg.Prober, cfg.TransportProbeTimeout, cfg.EventBuffer, cfg.Logger, "membership"),
		cfg:       cfg,
		tm:        cfg.derive(),
		meta:      meta,
		view:      make(map[string]gossipNode),
		pinging:   make(map[ID]time.Time),
		warnLimit: logx.Limiter{Every: time.Second},
	}
	return g, nil
}

// The member metadata gossip carries: a heartbeat of the local member
// (package heartbeat.go's format, which is bounded and strictly checked),
// whose memberlist node name must be gossipName of the member it holds.

// ErrGossipMeta wraps every error of decodeGossipMeta.
var ErrGossipMeta = errors.New("invalid gossip member metadata")

// gossipName is a member's memberlist node name: one per process, so that
// memberlist never merges two runs of a node, and the table decides about
// names as it does for every membership.
func gossipName(m Member) string { return m.Name + "/" + m.ID.String() }

func encodeGossipMeta(m Member, cmd Command) ([]byte, error) {
	b, err := Heartbeat{Command: cmd, Member: m}.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		// memberlist panics on metadata past its limit: refuse here.
		return nil, fmt.Errorf("metadata of %d bytes, at most %d: shorten the node name or the domain", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeGossipMeta checks what a peer says about itself: its member, alive
// or leaving (a node about to leave says so in its metadata first, because
// memberlist tells a leave from a death to no delegate). It never panics.
func decodeGossipMeta(node string, meta []byte) (Heartbeat, error) {
	if len(meta) > memberlist.MetaMaxSize {
		return Heartbeat{}, fmt.Errorf("%w: %d bytes, at most %d", ErrGossipMeta, len(meta), memberlist.MetaMaxSize)
	}
	h, err := DecodeHeartbeat(meta)
	if err != nil {
		return Heartbeat{}, fmt.Errorf("%w: %w", ErrGossipMeta, err)
	}
	if h.Seq != 0 {
		return Heartbeat{}, fmt.Errorf("%w: sequence %d", ErrGossipMeta, h.Seq)
	}
	if want := gossipName(h.Member); node != want {
		return Heartbeat{}, fmt.Errorf("%w: node name %q, but the metadata is of %q", ErrGossipMeta, node, want)
	}
	return h, nil
}

// Start binds gossip's sockets and begins to join the seeds in the
// background: a node whose seeds are all down starts alone and keeps
// trying, as the first node of a cluster must.
func (g *Gossip) Start(ctx context.Context) error {
	g.runMu.Lock()
	defer g.runMu.Unlock()
	if g.started {
		return errors.New("membership: gossip: already started")
	}
	mc, err := g.memberlistConfig()
	if err != nil {
		return fmt.Errorf("membership: gossip: %w", err)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("membership: gossip: start on %v: %w", g.cfg.Bind, err)
	}
	g.ml, g.started = ml, true
	n := ml.LocalNode() // read before memberlist's goroutines could change it
	a, _ := netip.AddrFromSlice(n.Addr)
	g.addr = netip.AddrPortFrom(a.Unmap(), n.Port)
	g.stop = make(chan struct{})
	g.startEvents()
	g.loopWG.Add(2)
	go func() { defer g.loopWG.Done(); g.joinLoop() }()
	go func() { defer g.loopWG.Done(); g.watchLoop() }()
	g.log.WithFields(logrus.Fields{"member": g.local.Name, "id": g.local.ID, "gossip": g.addr,
		"probe_interval": g.tm.probeInterval, "suspicion_mult": g.tm.suspicionMult, "encrypted": mc.Keyring != nil}).Info("gossip membership started")
	return nil
}

// GossipAddr is where gossip listens, as advertised (with Bind's port 0,
// the port picked); the zero value before Start.
func (g *Gossip) GossipAddr() netip.AddrPort {
	g.runMu.Lock()
	defer g.runMu.Unlock()
	return g.addr
}

func (g *Gossip) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = gossipName(g.local)
	mc.BindAddr, mc.BindPort = g.cfg.Bind.Addr().String(), int(g.cfg.Bind.Port())
	if a := g.cfg.Advertise; a.IsValid() {
		mc.AdvertiseAddr, mc.AdvertisePort = a.Addr().String(), int(a.Port())
	}
	// The domain is memberlist's label, authenticated with the packet: the
	// gossip of another domain is refused before it is read, whatever its
	// key.
	mc.Label = g.local.Domain
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = g.tm.probeInterval, g.tm.probeTimeout, g.tm.suspicionMult
	// Lifeguard widens a suspicion up to six times while too few members
	// confirm it, which in a small cluster (one other member to confirm)
	// made a paused process's detection vary from 2.7 to 5 s. flock
	// probes a member over its transport before it fails it (see
	// NotifyLeave), which already guards against a false death, so the
	// suspicion stays at its minimum and detection near DropTime.
	mc.SuspicionMaxTimeoutMult = 1
	// Gossip at least twice per probe interval, so a suspicion reaches the
	// accused (to refute it) well within its timeout.
	mc.GossipInterval = min(mc.GossipInterval, g.tm.probeInterval/2)
	// Joins and push-pulls are TCP exchanges of the whole member list:
	// bounded like a probe of a silent member, within the drop time.
	mc.TCPTimeout = g.cfg.DropTime
	d := gossipDelegate{g}
	mc.Delegate, mc.Events, mc.Alive = d, d, d
	mc.Logger = log.New(&memberlistLog{g: g}, "", 0)
	if g.cfg.Keyring != nil {
		keys, err := g.cfg.Keyring.Derive(gossipKeyPurpose)
		if err != nil {
			return nil, err
		}
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		mc.Keyring, g.mlKeys = kr, kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
		g.keyIDs = g.cfg.Keyring.IDs()
	}
	return mc, nil
}

// joinLoop joins the seeds until one join succeeds, then every
// ResolveEvery joins the seeds that are not members. It has a goroutine of
// its own: a join waits for seeds that do not answer, up to memberlist's
// TCP timeout each, and must not hold up the watch.
func (g *Gossip) joinLoop() {
	wait := g.cfg.JoinRetry
	joined := false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		ok := g.join(joined)
		switch {
		case ok && !joined:
			joined, wait = true, g.cfg.ResolveEvery
		case !joined:
			// A whole cluster starting at once finds its seeds down at
			// first: retry within about a second, not ResolveEvery.
			wait = min(2*wait, max(g.cfg.JoinRetry, min(g.cfg.ResolveEvery, time.Second)))
		}
		t.Reset(wait)
	}
}

// watchLoop follows memberlist's view and the keyring, and sweeps the
// table.
func (g *Gossip) watchLoop() {
	tick := time.NewTicker(max(g.cfg.Frequency/5, 10*time.Millisecond))
	defer tick.Stop()
	for now := time.Now(); ; {
		g.refresh(now)
		g.sweep(now)
		g.followKeys()
		select {
		case <-g.stop:
			return
		case now = <-tick.C:
		}
	}
}

// seeds returns the seeds, resolved, without this node.
func (g *Gossip) seeds() []netip.AddrPort {
	out := slices.Clone(g.cfg.Seeds)
	if g.cfg.Resolve != nil {
		ctx, cancel := context.WithTimeout(g.ctx, max(g.tm.probeInterval, time.Second))
		found, err := g.cfg.Resolve(ctx)
		cancel()
		if err != nil {
			g.warn("seeds not resolved: " + err.Error())
		}
		out = append(out, found...)
	}
	self := g.GossipAddr()
	out = slices.DeleteFunc(out, func(a netip.AddrPort) bool { return a == self || a == g.cfg.Bind })
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	out = slices.Compact(out)
	if len(out) > maxResolved {
		out = out[:maxResolved]
	}
	return out
}

// join contacts the seeds (after the first success, only those that are
// not members) and reports whether one answered. With no seed, the node
// is alone, which is a success.
func (g *Gossip) join(joined bool) bool {
	seeds := g.seeds()
	if joined {
		known := make(map[netip.AddrPort]bool)
		g.mu.Lock()
		for _, n := range g.view {
			known[n.addr] = true
		}
		g.mu.Unlock()
		seeds = slices.DeleteFunc(seeds, func(a netip.AddrPort) bool { return known[a] })
	}
	if len(seeds) == 0 {
		return true
	}
	addrs := make([]string, len(seeds))
	for i, a := range seeds {
		addrs[i] = a.String()
	}
	n, err := g.ml.Join(addrs)
	if n == 0 {
		if !joined {
			g.warn(fmt.Sprintf("no seed answered yet (%d tried): %v", len(addrs), err))
		}
		return false
	}
	if err != nil {
		g.log.WithError(err).Debug("some seeds did not answer")
	}
	if !joined {
		g.log.WithFields(logrus.Fields{"seeds": n, "members": g.ml.NumMembers() - 1}).Info("joined the cluster")
	}
	return true
}

// refresh counts every member memberlist holds as heard now, the gossip
// equivalent of a heartbeat: memberlist fails a silent one (NotifyLeave).
// A member that the table failed meanwhile (a probe over the transport,
// after a send failed) while memberlist still holds it is heard again only
// when its own process answers a ping: memberlist's view lags, and would
// otherwise bring a paused process straight back.
func (g *Gossip) refresh(now time.Time) {
	var heard []Member
	var ping []gossipNode
	g.mu.Lock()
	for _, n := range g.view {
		if n.Command != CommandAlive {
			continue
		}
		_, failed := g.table.failed[n.Member.ID]
		if failed && g.table.members[n.Member.ID] == nil {
			if at, busy := g.pinging[n.Member.ID]; !busy || (!at.IsZero() && now.Sub(at) >= g.table.reprobe) {
				g.pinging[n.Member.ID] = time.Time{}
				ping = append(ping, n)
			}
			continue
		}
		heard = append(heard, n.Member)
	}
	g.mu.Unlock()
	for _, m := range heard {
		g.observe(Heartbeat{Command: CommandAlive, Member: m})
	}
	for _, n := range ping {
		g.loopWG.Add(1)
		go func() { defer g.loopWG.Done(); g.ping(n) }()
	}
}

// ping asks a member the table failed, through memberlist (UDP, answered
// by its process), whether it is back.
func (g *Gossip) ping(n gossipNode) {
	_, err := g.ml.Ping(gossipName(n.Member), net.UDPAddrFromAddrPort(n.addr))
	g.mu.Lock()
	_, waiting := g.pinging[n.Member.ID]
	if waiting {
		g.pinging[n.Member.ID] = time.Now()
		if err == nil {
			delete(g.pinging, n.Member.ID)
		}
	}
	g.mu.Unlock()
	if waiting && err == nil && g.ctx.Err() == nil {
		g.observe(Heartbeat{Command: CommandAlive, Member: n.Member})
	}
}

// followKeys hands a rotation of the cluster keyring (flockd's SIGHUP) to
// memberlist: the new keys first, then the new primary, then the keys that
// went, so that no step leaves a node unable to open what another sends.
func (g *Gossip) followKeys() {
	if g.cfg.Keyring == nil {
		return
	}
	ids := g.cfg.Keyring.IDs()
	g.mu.Lock()
	same := slices.Equal(ids, g.keyIDs)
	g.mu.Unlock()
	if same {
		return
	}
	keys, err := g.cfg.Keyring.Derive(gossipKeyPurpose)
	if err != nil {
		g.warn("gossip keys not rotated: " + err.Error())
		return
	}
	kr := g.mlKeys
	var errs []error
	for _, k := range keys {
		errs = append(errs, kr.AddKey(k))
	}
	errs = append(errs, kr.UseKey(keys[0]))
	for _, old := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return string(k) == string(old) }) {
			errs = append(errs, kr.RemoveKey(old))
		}
	}
	if err := errors.Join(errs...); err != nil {
		g.warn("gossip keys not rotated: " + err.Error())
		return
	}
	g.mu.Lock()
	g.keyIDs = ids
	g.mu.Unlock()
	g.log.WithField("keys", len(keys)).Info("gossip keys rotated")
}

// warn logs at most one warning a second.
func (g *Gossip) warn(msg string) {
	if ok, n := g.warnLimit.Allow(time.Now()); ok {
		g.log.WithField("not_logged", n).Warn(msg)
	}
}

// Observe takes a member's goodbye over the transport (see Leaver). That
// a member called is not taken as news of it: who is a member is gossip's
// to say.
func (g *Gossip) Observe(m Member, leaving bool) {
	if leaving {
		g.observe(Heartbeat{Command: CommandLeaving, Member: m})
	}
}

// Stats returns counters since the service started.
func (g *Gossip) Stats() Stats { return g.core.stats() }

// Stop announces the leave (memberlist gossips it, waiting up to the
// probe interval times the suspicion multiplier, at most until ctx ends),
// shuts memberlist down and returns when every goroutine of the service
// has ended.
func (g *Gossip) Stop(ctx context.Context) error {
	g.runMu.Lock()
	if !g.started || g.stopped {
		g.runMu.Unlock()
		return nil
	}
	g.stopped = true
	close(g.stop)
	crashed := g.crashed
	g.runMu.Unlock()
	if !crashed {
		g.leave(ctx)
	}
	if err := syncx.Wait(ctx, &g.loopWG); err != nil {
		return fmt.Errorf("membership: gossip: stop: %w", err)
	}
	if err := g.shutdown(ctx); err != nil {
		return fmt.Errorf("membership: gossip: stop: %w", err)
	}
	g.log.WithField("member", g.local.Name).Info("gossip membership stopped")
	return nil
}

// leave says goodbye over the transport and by gossip, then shuts
// memberlist down.
func (g *Gossip) leave(ctx context.Context) {
	// Leave before the loops are awaited: a join in progress may wait for
	// a seed up to memberlist's TCP timeout, and shutting memberlist down
	// ends it sooner.
	g.tellLeaving(ctx)
	timeout := time.Duration(g.tm.suspicionMult) * g.tm.probeInterval
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	// The metadata says "leaving" first: memberlist reports a leave to its
	// delegate as it reports a death.
	g.mu.Lock()
	g.meta, _ = encodeGossipMeta(g.local, CommandLeaving) // as long as the alive one: it fits
	g.mu.Unlock()
	if err := g.ml.UpdateNode(max(timeout, 0)); err != nil {
		g.log.WithError(err).Debug("leaving metadata not gossiped in time")
	}
	if err := g.ml.Leave(max(timeout, 0)); err != nil {
		g.log.WithError(err).Debug("leave not gossiped in time")
	}
	if err := g.ml.Shutdown(); err != nil {
		g.log.WithError(err).Debug("memberlist shutdown")
	}
}

// tellLeaving says goodbye over the transport, to every member at once,
// each bounded by the transport probe timeout.
func (g *Gossip) tellLeaving(ctx context.Context) {
	if g.cfg.Leaver == nil {
		return
	}
	var wg sync.WaitGroup
	for _, m := range g.core.Members() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, g.cfg.TransportProbeTimeout)
			defer cancel()
			if err := g.cfg.Leaver.Leave(lctx, m.Addr); err != nil {
				g.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).WithError(err).Debug("leave not delivered")
			}
		}()
	}
	wg.Wait()
}

// gossipDelegate is what memberlist calls. It runs on memberlist's
// goroutines, some holding memberlist's own locks: it must not block, and
// must not call memberlist.
type gossipDelegate struct{ g *Gossip }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	if len(d.g.meta) > limit {
		return nil // NewGossip checked the size; never reached
	}
	return d.g.meta
}

func (gossipDelegate) NotifyMsg([]byte)                {}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (gossipDelegate) LocalState(bool) []byte          { return nil }
func (gossipDelegate) MergeRemoteState([]byte, bool)   {}

// NotifyAlive refuses a node whose metadata is invalid, or of another
// domain, before memberlist adds it: it is neither a member nor gossiped.
func (d gossipDelegate) NotifyAlive(n *memberlist.Node) error {
	g := d.g
	h, err := decodeGossipMeta(n.Name, n.Meta)
	if err != nil {
		g.refused.Refuse(refuse.Malformed, net.JoinHostPort(n.Addr.String(), fmt.Sprint(n.Port)), err)
		return err
	}
	if m := h.Member; m.Domain != g.local.Domain {
		g.mu.Lock()
		g.table.counters.ForeignDomain++
		g.mu.Unlock()
		return fmt.Errorf("member %s is of domain %q, not %q", m, m.Domain, g.local.Domain)
	}
	return nil
}

func (d gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.alive(n) }
func (d gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.alive(n) }

func (d gossipDelegate) alive(n *memberlist.Node) {
	g := d.g
	h, err := decodeGossipMeta(n.Name, n.Meta)
	if err != nil || h.Member.Domain != g.local.Domain || h.Member.ID == g.local.ID {
		return // refused by NotifyAlive, or this node
	}
	a, _ := netip.AddrFromSlice(n.Addr)
	g.mu.Lock()
	if _, ok := g.view[n.Name]; ok || len(g.view) < maxGossipView {
		g.view[n.Name] = gossipNode{Heartbeat: h, addr: netip.AddrPortFrom(a.Unmap(), n.Port)}
	}
	delete(g.pinging, h.Member.ID) // its own news: it is back
	g.mu.Unlock()
	g.observe(h)
}

// maxGossipView bounds the nodes followed: the members the table may hold,
// and as many more (duplicates, restarts not yet reaped by memberlist).
const maxGossipView = 2 * maxMembers

// NotifyLeave is a leave or a death: memberlist does not say which, but a
// node that leaves has said so in its metadata first.
func (d gossipDelegate) NotifyLeave(n *memberlist.Node) {
	g := d.g
	h, err := decodeGossipMeta(n.Name, n.Meta)
	if err != nil || h.Member.Domain != g.local.Domain || h.Member.ID == g.local.ID {
		return
	}
	g.mu.Lock()
	delete(g.view, n.Name)
	delete(g.pinging, h.Member.ID)
	g.mu.Unlock()
	if h.Command == CommandLeaving {
		g.observe(h)
		return
	}
	now := time.Now()
	if g.cfg.Prober != nil {
		// As multicast does with a silent member: SWIM's verdict is
		// checked over the transport before the member is failed. Lost
		// UDP, or this node stalled, can time a suspicion out; a paused
		// or dead process cannot answer the probe.
		g.mu.Lock()
		m, ok := g.table.suspect(h.Member.ID, now)
		if e := g.table.members[h.Member.ID]; ok && e != nil {
			e.State = Suspect
		}
		g.mu.Unlock()
		if ok {
			g.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).Info("gossip lost member; probing it before dropping it")
			g.startProbes([]Member{m})
		}
		return
	}
	g.mu.Lock()
	evs := g.table.declareFailed(h.Member.ID, now, "gossip: no member could reach it (suspicion timed out)")
	g.mu.Unlock()
	g.events.Push(evs...)
}

// memberlistLog routes memberlist's log lines to flock's logger. What a
// peer or a stranger causes per packet (a packet that does not decrypt, is
// of another domain, does not parse) is counted as refused, and logged at
// most once a second with the refused count; memberlist's own debug lines
// go to debug, its other warnings and errors to warn, at most once a
// second.
type memberlistLog struct{ g *Gossip }

var fromRE = regexp.MustCompile(`from=(\S+)`)

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level, msg := "", line
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, msg = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	g := w.g
	from := ""
	if m := fromRE.FindStringSubmatch(msg); m != nil {
		from = m[1]
	}
	low := strings.ToLower(msg)
	switch {
	case level == "DEBUG":
		g.log.Debug("memberlist: " + msg)
	case strings.Contains(low, "unacceptable label"):
		// Gossip of another domain: ignored, as other domains' heartbeats.
		g.mu.Lock()
		g.table.counters.ForeignDomain++
		g.mu.Unlock()
		g.log.Debug("memberlist: " + msg)
	case strings.Contains(low, "not encrypted") || strings.Contains(low, "encryption version"):
		g.refused.Refuse(refuse.Unauthenticated, from, errors.New(msg))
	case strings.Contains(low, "decrypt"):
		g.refused.Refuse(refuse.Forged, from, errors.New(msg))
	case strings.Contains(low, "failed to decode") || strings.Contains(low, "not supported") || strings.Contains(low, "missing message type") ||
		strings.Contains(low, "invalid checksum") || strings.Contains(low, "invalid msgtype") || strings.Contains(low, "truncated messages") ||
		strings.Contains(low, "label header"):
		g.refused.Refuse(refuse.Malformed, from, errors.New(msg))
	case strings.Contains(low, "ping for unexpected node") || strings.Contains(low, "ignoring alive message") || strings.Contains(low, "ignoring an alive message"):
		// A restarted member's old name probed at its address, or a node
		// NotifyAlive refused (counted there).
		g.log.Debug("memberlist: " + msg)
	case level == "INFO":
		g.log.Info("memberlist: " + msg)
	default:
		g.warn("memberlist: " + msg)
	}
	return len(p), nil
}

var _ io.Writer = (*memberlistLog)(nil)
