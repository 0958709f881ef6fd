package membership

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Leaver tells a member that this node is leaving.
type Leaver interface {
	Leave(ctx context.Context, addr netip.AddrPort) error
}

// StaticConfig configures a Static membership service.
type StaticConfig struct {
	// Peers are the receivers of the cluster's nodes; this node's own
	// address may be among them.
	Peers     []netip.AddrPort
	Frequency time.Duration // how often each peer is pinged
	DropTime  time.Duration // silence after which a member is failed
	// ProbeTimeout bounds one ping.
	ProbeTimeout time.Duration
	// Prober pings a peer over the transport; it is required.
	Prober Prober
	// Leaver, if set, tells the members when this node stops.
	Leaver Leaver
	// Resolve, if set, finds more peers (DNS: see NewDNSResolver): it is
	// called at Start and every ResolveEvery, and the peers are Peers and
	// what it last found. An empty answer is a cluster of one for now (at
	// boot, the first node finds nobody); a failed one keeps what it found
	// before. A peer no longer found is not pinged any more: it fails
	// after DropTime unless it pings this node.
	Resolve      func(ctx context.Context) ([]netip.AddrPort, error)
	ResolveEvery time.Duration
	EventBuffer  int
	Logger       logrus.FieldLogger
}

// DefaultStaticConfig returns the defaults of conf/server.toml, without
// peers.
func DefaultStaticConfig() StaticConfig {
	return StaticConfig{
		Frequency:    500 * time.Millisecond,
		DropTime:     3 * time.Second,
		ProbeTimeout: time.Second,
		ResolveEvery: 5 * time.Second,
		EventBuffer:  1024,
	}
}

// Static is membership without multicast, as clouds need: a fixed list of
// peers, each pinged over the transport every Frequency; a peer that has
// not answered for DropTime is failed, and joins again when it answers. A
// node that pings this one counts as heard from too, listed or not.
type Static struct {
	*core
	cfg StaticConfig

	peersMu  sync.Mutex
	resolved []netip.AddrPort // Resolve's last answer, without this node
	// resolveFailing: the last resolution failed (the loop's only).
	resolveFailing bool

	runMu   sync.Mutex
	started bool
	stopped bool
	stop    chan struct{}
	done    chan struct{}
}

// maxResolved bounds the peers a resolution may add: the member table
// holds no more.
const maxResolved = maxMembers

// peers is Peers and the last resolution.
func (s *Static) peers() []netip.AddrPort {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	out := slices.Clone(s.cfg.Peers)
	for _, a := range s.resolved {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// resolve asks Resolve for the peers, bounded by ProbeTimeout.
func (s *Static) resolve() {
	if s.cfg.Resolve == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, max(s.cfg.ProbeTimeout, time.Second))
	defer cancel()
	found, err := s.cfg.Resolve(ctx)
	// Logged when it starts and stops failing, not every interval.
	if failing := err != nil; failing != s.resolveFailing {
		s.resolveFailing = failing
		if failing {
			s.log.WithError(err).Warn("peers not resolved; keeping the last ones until they are")
		} else {
			s.log.Info("peers resolved again")
		}
	}
	if err != nil {
		return
	}
	found = slices.DeleteFunc(slices.Clone(found), func(a netip.AddrPort) bool { return a == s.local.Addr })
	slices.SortFunc(found, func(a, b netip.AddrPort) int { return a.Compare(b) })
	found = slices.Compact(found)
	if len(found) > maxResolved {
		found = found[:maxResolved]
	}
	s.peersMu.Lock()
	changed := !slices.Equal(found, s.resolved)
	s.resolved = found
	s.peersMu.Unlock()
	if changed {
		s.log.WithField("peers", found).Info("peers resolved")
	}
}

var _ Service = (*Static)(nil)

// NewStatic prepares a service for local among cfg.Peers.
func NewStatic(local Member, cfg StaticConfig) (*Static, error) {
	var errs []error
	if cfg.Prober == nil {
		errs = append(errs, errors.New("a prober is required"))
	}
	errs = append(errs, CheckTiming(cfg.Frequency, cfg.DropTime), CheckProbe(cfg.ProbeTimeout, cfg.DropTime))
	if cfg.EventBuffer < 1 {
		errs = append(errs, fmt.Errorf("event buffer %d: need at least 1", cfg.EventBuffer))
	}
	if cfg.Resolve != nil && cfg.ResolveEvery <= 0 {
		errs = append(errs, fmt.Errorf("resolve interval %v: must be positive", cfg.ResolveEvery))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("membership: static: %w", err)
	}
	local, err := fillLocal(local)
	if err != nil {
		return nil, err
	}
	cfg.Peers = slices.DeleteFunc(slices.Clone(cfg.Peers), func(a netip.AddrPort) bool { return a == local.Addr })
	// Pings are the probes: a silent member has already failed to answer
	// them, so the core fails it without probing again (reprobe 0). The
	// prober still settles name clashes: whether a member whose name
	// another process announces answers at its address.
	return &Static{
		core: newCore(local, cfg.DropTime, 0, cfg.Prober, cfg.ProbeTimeout, cfg.EventBuffer, cfg.Logger, "membership"),
		cfg:  cfg,
	}, nil
}

// Start begins to ping the peers; the first round goes out at once.
func (s *Static) Start(ctx context.Context) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.started {
		return errors.New("membership: static: already started")
	}
	s.started = true
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	s.startEvents()
	go s.loop()
	s.log.WithFields(logrus.Fields{"peers": len(s.cfg.Peers), "member": s.local.Name, "id": s.local.ID}).Info("static membership started")
	return nil
}

func (s *Static) loop() {
	defer close(s.done)
	var pings sync.WaitGroup
	defer pings.Wait()
	inflight := make(map[netip.AddrPort]bool)
	var mu sync.Mutex // guards inflight
	round := func() {
		for _, addr := range s.peers() {
			mu.Lock()
			busy := inflight[addr]
			inflight[addr] = true
			mu.Unlock()
			if busy {
				continue // the last ping is still waiting: one at a time per peer
			}
			pings.Add(1)
			go func() {
				defer pings.Done()
				s.ping(addr)
				mu.Lock()
				delete(inflight, addr)
				mu.Unlock()
			}()
		}
	}
	s.resolve()
	round()
	tick := time.NewTicker(s.cfg.Frequency)
	defer tick.Stop()
	var resolveTick <-chan time.Time
	if s.cfg.Resolve != nil {
		t := time.NewTicker(s.cfg.ResolveEvery)
		defer t.Stop()
		resolveTick = t.C
	}
	sweep := time.NewTicker(max(s.cfg.Frequency/5, 10*time.Millisecond))
	defer sweep.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			round()
		case <-resolveTick:
			// Pings wait for the answer: a resolver that hangs up to its
			// timeout delays one round, never the sweep's failures.
			s.resolve()
		case now := <-sweep.C:
			s.sweep(now)
		}
	}
}

func (s *Static) ping(addr netip.AddrPort) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ProbeTimeout)
	defer cancel()
	m, err := s.cfg.Prober.Probe(ctx, addr)
	if err != nil {
		s.log.WithField("address", addr).WithError(err).Debug("ping failed")
		return
	}
	s.observe(Heartbeat{Command: CommandAlive, Member: m})
}

// Observe records what the transport heard from a member that called this
// node: it is there, or it is leaving.
func (s *Static) Observe(m Member, leaving bool) {
	cmd := CommandAlive
	if leaving {
		cmd = CommandLeaving
	}
	s.observe(Heartbeat{Command: cmd, Member: m})
}

// Stats returns counters since the service started.
func (s *Static) Stats() Stats { return s.core.stats() }

// Stop tells the members this node leaves (when a Leaver is set), stops
// pinging and returns when every goroutine of the service has ended.
func (s *Static) Stop(ctx context.Context) error {
	s.runMu.Lock()
	if !s.started || s.stopped {
		s.runMu.Unlock()
		return nil
	}
	s.stopped = true
	close(s.stop)
	s.runMu.Unlock()
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("membership: stop: %w", ctx.Err())
	}
	if s.cfg.Leaver != nil {
		var wg sync.WaitGroup
		for _, m := range s.Members() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
				defer cancel()
				if err := s.cfg.Leaver.Leave(lctx, m.Addr); err != nil {
					s.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).WithError(err).Debug("leave not delivered")
				}
			}()
		}
		wg.Wait()
	}
	if err := s.shutdown(ctx); err != nil {
		return fmt.Errorf("membership: stop: %w", err)
	}
	s.log.WithField("member", s.local.Name).Info("static membership stopped")
	return nil
}
