package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/ipv4"

	"github.com/flockhq/flock/keyring"
)

// MulticastConfig configures a Multicast membership service.
type MulticastConfig struct {
	// Group is the multicast address and port that defines the cluster.
	Group netip.AddrPort
	// Interface is the address of the local interface that carries
	// heartbeats. It is required: leaving the choice to the routing table
	// could send heartbeats onto a network nobody meant to use.
	Interface netip.Addr
	TTL       int
	Frequency time.Duration // heartbeat interval
	DropTime  time.Duration // silence after which a member is failed
	// Prober, if set, confirms a silent member over TCP before it is
	// failed (Tomcat's TcpFailureDetector): a member whose heartbeats alone
	// are lost stays, a paused process does not.
	Prober       Prober
	ProbeTimeout time.Duration
	// EventBuffer bounds the events waiting for a slow consumer.
	EventBuffer int
	// Keyring, if set, seals every heartbeat this node sends and is
	// required of every heartbeat it accepts (see sealed.go).
	Keyring *keyring.Keyring
	// MaxClockSkew is how far a sealed heartbeat's send time may be from
	// this node's clock; older (or newer) ones are refused as replays.
	MaxClockSkew time.Duration
	Logger       logrus.FieldLogger
}

// DefaultMulticastConfig returns Tomcat's defaults, bound to loopback so
// that nothing leaves the machine until someone chooses an interface.
func DefaultMulticastConfig() MulticastConfig {
	return MulticastConfig{
		Group:        netip.MustParseAddrPort("228.0.0.4:45564"),
		Interface:    netip.MustParseAddr("127.0.0.1"),
		TTL:          1,
		Frequency:    500 * time.Millisecond,
		DropTime:     3 * time.Second,
		ProbeTimeout: time.Second,
		EventBuffer:  1024,
		MaxClockSkew: 30 * time.Second,
	}
}

func (c MulticastConfig) validate() error {
	var errs []error
	if !c.Group.Addr().Is4() || !c.Group.Addr().IsMulticast() || c.Group.Port() == 0 {
		errs = append(errs, fmt.Errorf("group %v: need an IPv4 multicast address and a port", c.Group))
	}
	if !c.Interface.Is4() || c.Interface.IsUnspecified() {
		errs = append(errs, fmt.Errorf("interface %v: need the IPv4 address of a local interface", c.Interface))
	}
	if c.TTL < 0 || c.TTL > 255 {
		errs = append(errs, fmt.Errorf("ttl %d: allowed 0..255", c.TTL))
	}
	errs = append(errs, CheckTiming(c.Frequency, c.DropTime))
	if c.Prober != nil {
		errs = append(errs, CheckProbe(c.ProbeTimeout, c.DropTime))
	}
	if c.EventBuffer < 1 {
		errs = append(errs, fmt.Errorf("event buffer %d: need at least 1", c.EventBuffer))
	}
	if c.Keyring != nil && c.MaxClockSkew < c.Frequency {
		errs = append(errs, fmt.Errorf("max clock skew %v: need at least the heartbeat frequency %v", c.MaxClockSkew, c.Frequency))
	}
	return errors.Join(errs...)
}

// Multicast is membership by UDP multicast heartbeats: every member sends its
// heartbeat to the group every Frequency and drops members it has not heard
// for DropTime.
type Multicast struct {
	*core
	cfg MulticastConfig

	// guarded by core.mu
	sent     uint64
	seq      uint64
	sendErr  error
	started  bool
	stopped  bool
	conn     *ipv4.PacketConn
	dst      *net.UDPAddr
	stop     chan struct{} // closed by Stop: ends the ticker
	tickDone chan struct{}
	// kick asks the ticker for an extra heartbeat, so a member that just
	// joined learns of this node at once instead of one interval later.
	kick     chan struct{}
	readDone chan struct{}
}

var _ Service = (*Multicast)(nil)

// NewMulticast prepares a service that announces local. A zero local.ID or
// local.Started is filled in with a fresh random id and the current time.
func NewMulticast(local Member, cfg MulticastConfig) (*Multicast, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("membership: multicast: %w", err)
	}
	local, err := fillLocal(local)
	if err != nil {
		return nil, err
	}
	// Encode once up front so a bad local member fails here, not in the loop.
	if _, err := (Heartbeat{Command: CommandAlive, Member: local}).MarshalBinary(); err != nil {
		return nil, fmt.Errorf("membership: local member: %w", err)
	}
	return &Multicast{
		core: newCore(local, cfg.DropTime, 2*cfg.Frequency, cfg.Prober, cfg.ProbeTimeout, cfg.EventBuffer, cfg.Logger, "membership"),
		cfg:  cfg,
	}, nil
}

// Stats returns counters since the service started.
func (s *Multicast) Stats() Stats {
	st := s.core.stats()
	s.mu.Lock()
	st.HeartbeatsSent = s.sent
	s.mu.Unlock()
	return st
}

// Start joins the group on the configured interface and begins to send
// heartbeats; the first goes out before Start returns.
func (s *Multicast) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("membership: multicast: already started")
	}
	conn, err := s.open(ctx)
	if err != nil {
		return fmt.Errorf("membership: multicast %v on %v: %w", s.cfg.Group, s.cfg.Interface, err)
	}
	s.started = true
	s.conn = conn
	s.dst = net.UDPAddrFromAddrPort(s.cfg.Group)
	s.stop = make(chan struct{})
	s.tickDone = make(chan struct{})
	s.readDone = make(chan struct{})
	s.kick = make(chan struct{}, 1)
	s.sendLocked(CommandAlive)

	s.startEvents()
	go func() { defer close(s.readDone); s.readLoop() }()
	go s.tickLoop()
	s.log.WithFields(logrus.Fields{"group": s.cfg.Group, "interface": s.cfg.Interface, "member": s.local.Name, "id": s.local.ID}).Info("multicast membership started")
	return nil
}

func (s *Multicast) open(ctx context.Context) (*ipv4.PacketConn, error) {
	ifi, err := InterfaceByAddr(s.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("%w (set [cluster.membership] bind to the address of the interface that connects the nodes)", err)
	}
	p, err := JoinGroup(ctx, s.cfg.Group, ifi)
	if err != nil {
		return nil, err
	}
	setup := []struct {
		what string
		err  error
	}{
		{"set multicast interface", p.SetMulticastInterface(ifi)},
		{"set ttl", p.SetMulticastTTL(s.cfg.TTL)},
		{"set loopback", p.SetMulticastLoopback(true)},
	}
	for _, st := range setup {
		if st.err != nil {
			p.Close()
			return nil, fmt.Errorf("%s on %s: %w", st.what, ifi.Name, st.err)
		}
	}
	return p, nil
}

// Stop sends the leave heartbeat and releases the socket. It returns when
// every goroutine of the service has ended, or when ctx is done.
func (s *Multicast) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	<-s.tickDone // no alive heartbeat may follow the leave

	s.mu.Lock()
	// Three copies: a single lost datagram would otherwise turn a clean
	// leave into a failure detected drop_time later. Receivers ignore the
	// repeats.
	for range 3 {
		s.sendLocked(CommandLeaving)
	}
	err := s.conn.Close()
	s.mu.Unlock()

	select {
	case <-s.readDone:
	case <-ctx.Done():
		return fmt.Errorf("membership: stop: %w", ctx.Err())
	}
	if serr := s.shutdown(ctx); serr != nil {
		return fmt.Errorf("membership: stop: %w", serr)
	}
	s.log.WithFields(logrus.Fields{"member": s.local.Name}).Info("multicast membership stopped")
	if err != nil {
		return fmt.Errorf("membership: close: %w", err)
	}
	return nil
}

func (s *Multicast) tickLoop() {
	defer close(s.tickDone)
	send := time.NewTicker(s.cfg.Frequency)
	defer send.Stop()
	// Sweep faster than heartbeats are sent so detection lags drop_time by
	// a fraction of a heartbeat, not a whole one.
	sweep := time.NewTicker(max(s.cfg.Frequency/5, 10*time.Millisecond))
	defer sweep.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-send.C:
			s.mu.Lock()
			s.sendLocked(CommandAlive)
			s.mu.Unlock()
		case <-s.kick:
			s.mu.Lock()
			s.sendLocked(CommandAlive)
			s.mu.Unlock()
		case now := <-sweep.C:
			s.sweep(now)
		}
	}
}

// sendLocked sends one heartbeat; s.mu must be held (it guards seq and the
// send-error state).
func (s *Multicast) sendLocked(cmd Command) {
	s.seq++
	h := Heartbeat{Command: cmd, Seq: s.seq, Member: s.local}
	var b []byte
	var err error
	if s.cfg.Keyring != nil {
		b, err = SealHeartbeat(s.cfg.Keyring, h, time.Now())
	} else {
		b, err = h.MarshalBinary()
	}
	if err == nil {
		_, err = s.conn.WriteTo(b, nil, s.dst)
	}
	if err != nil {
		s.noteSendError(err)
		return
	}
	s.sent++
	s.noteSendError(nil)
}

func (s *Multicast) readLoop() {
	buf := make([]byte, MaxSealedHeartbeatLen+1)
	guard := newReplayGuard(s.cfg.MaxClockSkew)
	for {
		n, _, src, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.WithError(err).Warn("heartbeat receive failed")
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond): // keep a persistent error from spinning
			}
			continue
		}
		h, sent, err := OpenHeartbeat(s.cfg.Keyring, buf[:n])
		if err == nil && s.cfg.Keyring != nil {
			err = guard.check(h, sent, time.Now())
		}
		if err != nil {
			s.mu.Lock()
			s.table.counters.Rejected++
			s.mu.Unlock()
			// The refusal log is rate-limited: a foreign sender on the
			// group can send thousands of packets a second.
			s.refused.Refuse(refusal(err), src.String(), err)
			continue
		}
		if s.observe(h) {
			select {
			case s.kick <- struct{}{}:
			default: // one is pending already
			}
		}
	}
}

// noteSendError logs the first failure of a run of failed sends and the
// recovery, not every heartbeat in between.
func (s *Multicast) noteSendError(err error) {
	if err != nil && s.sendErr == nil {
		s.log.WithError(err).Warn("heartbeat send failing")
	}
	if err == nil && s.sendErr != nil {
		s.log.Info("heartbeat send recovered")
	}
	s.sendErr = err
}
