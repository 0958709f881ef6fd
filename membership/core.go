package membership

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/eventq"
	"github.com/flockhq/flock/internal/logx"
	"github.com/flockhq/flock/internal/refuse"
	"github.com/flockhq/flock/internal/syncx"
)

// Prober asks a member's process, over the cluster transport, whether it is
// there, and returns the member that answered. An answer must come from the
// process itself, not just its kernel, so a paused process fails the probe.
type Prober interface {
	Probe(ctx context.Context, addr netip.AddrPort) (Member, error)
}

// core is what every implementation shares: the member table, the event
// queue, probing, and the goroutines that serve them.
type core struct {
	local        Member
	log          logrus.FieldLogger
	prober       Prober
	probeTimeout time.Duration

	mu      sync.Mutex
	table   *table
	events  *eventq.Queue[Event]
	warned  map[string]time.Time // notes logged in the last minute; guarded by mu
	closed  bool                 // shutdown has begun: no more probes; guarded by mu
	refused *refuse.Counter

	ctx    context.Context // cancelled by shutdown: ends probes
	cancel context.CancelFunc
	wg     sync.WaitGroup // probes and the event queue
}

// newCore prepares the shared part of a service. With a prober, a member
// whose name another process announces is probed before it is kept or
// replaced, and, if reprobe is above zero, a silent member before it is
// failed.
func newCore(local Member, dropTime, reprobe time.Duration, prober Prober, probeTimeout time.Duration, eventBuffer int, log logrus.FieldLogger, component string) *core {
	log = logx.OrDiscard(log)
	if prober == nil {
		reprobe = 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := newTable(local, dropTime, reprobe)
	t.probeClashes = prober != nil
	return &core{
		local:        local,
		log:          log.WithField("component", component),
		prober:       prober,
		probeTimeout: probeTimeout,
		table:        t,
		events:       eventq.New[Event](eventBuffer),
		warned:       make(map[string]time.Time),
		refused:      refuse.New(log.WithField("component", component)),
		ctx:          ctx,
		cancel:       cancel,
	}
}

// fillLocal gives a local member without id or start time a fresh one.
func fillLocal(local Member) (Member, error) {
	if local.ID.IsZero() {
		id, err := NewID()
		if err != nil {
			return Member{}, err
		}
		local.ID = id
	}
	if local.Started.IsZero() {
		local.Started = time.Now()
	}
	return local, nil
}

func (c *core) startEvents() {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.events.Run(c.ctx.Done()) }()
}

// Local implements Service.
func (c *core) Local() Member { return c.local }

// Events implements Service.
func (c *core) Events() <-chan Event { return c.events.Out() }

// Members implements Service.
func (c *core) Members() []Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.table.snapshot()
}

// Suspect asks for the member with this id to be probed now (a send to it
// failed); it is dropped if it does not answer. Without a prober, or while
// a probe is under way, it does nothing.
func (c *core) Suspect(id ID) {
	c.mu.Lock()
	m, ok := c.table.suspect(id, time.Now())
	c.mu.Unlock()
	if ok {
		c.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).Info("send failed; probing member")
		c.startProbes([]Member{m})
	}
}

// SuspectAddr is Suspect for the member whose receiver is addr.
func (c *core) SuspectAddr(addr netip.AddrPort) {
	c.mu.Lock()
	var id ID
	for _, e := range c.table.members {
		if e.Addr == addr {
			id = e.ID
		}
	}
	c.mu.Unlock()
	if !id.IsZero() {
		c.Suspect(id)
	}
}

// observe applies a heartbeat (or its equivalent) received now. It reports
// whether this node should announce itself at once (to a newcomer).
func (c *core) observe(h Heartbeat) (answer bool) {
	c.mu.Lock()
	now := time.Now()
	v := c.table.observe(h, now)
	c.mu.Unlock()
	if v.limited {
		c.refused.Refuse(refuse.Limit, h.Member.Addr.String(), errors.New(v.note))
	} else if v.note != "" {
		c.warnLimited(v.note, now)
	}
	c.events.Push(v.events...)
	for _, m := range v.probes {
		c.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).Info("another process announces this member's name; probing it")
	}
	c.startProbes(v.probes)
	return v.answer
}

// warnLimited logs note as a warning, but the same note at most once a
// minute: a name clash repeats with every heartbeat. At most maxWarned
// different notes are remembered; past that, new ones are not logged (the
// counters still count).
func (c *core) warnLimited(note string, now time.Time) {
	const every, maxWarned = time.Minute, 64
	c.mu.Lock()
	if at, ok := c.warned[note]; ok && now.Sub(at) < every {
		c.mu.Unlock()
		return
	}
	if len(c.warned) >= maxWarned {
		for n, at := range c.warned {
			if now.Sub(at) >= every {
				delete(c.warned, n)
			}
		}
	}
	full := len(c.warned) >= maxWarned
	if !full {
		c.warned[note] = now
	}
	c.mu.Unlock()
	if !full {
		c.log.Warn(note)
	}
}

// sweep fails silent members, or starts probing them.
func (c *core) sweep(now time.Time) {
	c.mu.Lock()
	evs, suspects, note := c.table.sweep(now)
	c.mu.Unlock()
	if note != "" {
		c.log.Warn(note)
	}
	c.events.Push(evs...)
	for _, m := range suspects {
		c.log.WithFields(logrus.Fields{"member": m.Name, "address": m.Addr}).Info("member silent; probing it before dropping it")
	}
	c.startProbes(suspects)
}

func (c *core) startProbes(ms []Member) {
	if len(ms) == 0 {
		return
	}
	// The transport may still report a member after the service stopped
	// (Observe, Suspect): no probe may start once shutdown waits.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for _, m := range ms {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithTimeout(c.ctx, c.probeTimeout)
			answer, err := c.prober.Probe(ctx, m.Addr)
			cancel()
			if c.ctx.Err() != nil {
				return // shutting down: no verdict
			}
			c.mu.Lock()
			evs := c.table.probed(m.ID, answer, err, time.Now())
			c.mu.Unlock()
			c.events.Push(evs...)
		}()
	}
}

// shutdown ends probes and the event queue and waits for them.
func (c *core) shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	return syncx.Wait(ctx, &c.wg)
}

// Stats returns counters since the service started.
func (c *core) stats() Stats {
	c.mu.Lock()
	st := c.table.counters
	c.mu.Unlock()
	st.EventsDropped = c.events.Dropped()
	st.Refused = c.refused.Snapshot()
	return st
}
