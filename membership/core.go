package membership

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/flockhq/flock/internal/eventq"
	"github.com/flockhq/flock/internal/logx"
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

	mu     sync.Mutex
	table  *table
	events *eventq.Queue[Event]

	ctx    context.Context // cancelled by shutdown: ends probes
	cancel context.CancelFunc
	wg     sync.WaitGroup // probes and the event queue
}

func newCore(local Member, dropTime, reprobe time.Duration, prober Prober, probeTimeout time.Duration, eventBuffer int, log logrus.FieldLogger, component string) *core {
	log = logx.OrDiscard(log)
	if prober == nil {
		reprobe = 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &core{
		local:        local,
		log:          log.WithField("component", component),
		prober:       prober,
		probeTimeout: probeTimeout,
		table:        newTable(local, dropTime, reprobe),
		events:       eventq.New[Event](eventBuffer),
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

// observe applies a heartbeat (or its equivalent) received now.
func (c *core) observe(h Heartbeat) (joined bool, note string) {
	c.mu.Lock()
	evs, note := c.table.observe(h, time.Now())
	c.mu.Unlock()
	c.events.Push(evs...)
	for _, e := range evs {
		if e.Type == Joined {
			joined = true
		}
	}
	return joined, note
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
	c.cancel()
	return syncx.Wait(ctx, &c.wg)
}

// Stats returns counters since the service started.
func (c *core) stats() Stats {
	c.mu.Lock()
	st := c.table.counters
	c.mu.Unlock()
	st.EventsDropped = c.events.Dropped()
	return st
}
