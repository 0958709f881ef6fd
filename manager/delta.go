package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flockhq/flock/membership"
)

// deltaPlacement is delta mode (Tomcat's DeltaManager): every node holds
// every session, so a change goes to every member and any node can serve
// any session. It keeps no state of its own.
type deltaPlacement struct {
	m *Manager
	// misses bounds the fetches of ids this node does not hold (see load):
	// each costs a request to a member, and ids come from clients.
	misses bucket
}

// missRate and missBurst bound the fetches of unknown ids, per node.
const (
	missRate  = 50 // per second
	missBurst = 50
)

// bucket is a token bucket on the manager's clock.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+rate*now.Sub(b.last).Seconds())
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

var _ placement = (*deltaPlacement)(nil)

// start is the state transfer: the oldest member answers every session,
// a page at a time, installed as it arrives; changes that arrive meanwhile
// are kept by version, so nothing stops while it runs. A source that dies
// (leaves the view, or stops answering within the request timeout) is
// given up at once and the next oldest member asked, each page being
// idempotent; what the first source sent is kept.
func (p *deltaPlacement) start(ms []membership.Member) {
	m := p.m
	m.transfer.set("running")
	start := m.clock.Now()
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.StateTransferTimeout)
	defer cancel()
	sources := slices.Clone(ms)
	slices.SortFunc(sources, func(a, b membership.Member) int {
		if a.Started.Equal(b.Started) {
			return strings.Compare(a.Name, b.Name)
		}
		return a.Started.Compare(b.Started)
	})
	total := 0
	var err error
	for i, from := range sources {
		log := m.log.WithField("member", from.Name)
		if i == 0 {
			log.Info("state transfer started")
		} else {
			log.WithError(err).Warn("state transfer source failed; asking the next member")
		}
		var n int
		n, err = m.pullWhileMember(ctx, from)
		total += n
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if m.ctx.Err() != nil {
		return
	}
	log := m.log.WithField("sessions", total)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		m.stats.timeouts.Add(1)
		m.transfer.set("timed out")
		log.WithField("timeout", m.cfg.StateTransferTimeout).Warn("state transfer timed out; serving what arrived")
	case err != nil:
		m.stats.timeouts.Add(1)
		m.transfer.set("failed")
		log.WithError(err).Warn("state transfer failed with every member; comparing copies with each instead")
		// Still not ready: a round of anti-entropy with each member brings
		// what the pull did not, before this node takes users.
		for _, mb := range m.members() {
			if _, err := m.syncWith(m.ctx, mb); err != nil {
				m.log.WithField("member", mb.Name).WithError(err).Warn("anti-entropy after a failed state transfer failed")
			}
		}
	default:
		d := m.clock.Now().Sub(start)
		m.stats.transferSessions.Add(uint64(total))
		m.stats.transferNanos.Store(uint64(d))
		m.transfer.set("done")
		log.WithField("took", d.Round(time.Millisecond)).Info("state transfer done")
		// A change another member made while the pages came, before it
		// heard of this node, reached the others and not here: one round
		// with each member brings it before this node takes users.
		for _, mb := range m.members() {
			if _, err := m.syncWith(m.ctx, mb); err != nil {
				m.log.WithField("member", mb.Name).WithError(err).Debug("anti-entropy after the state transfer failed")
			}
		}
	}
}

// pullWhileMember pulls every session from a member, given up the moment
// the member leaves this node's view.
func (m *Manager) pullWhileMember(ctx context.Context, from membership.Member) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		for {
			ms, changed := m.view.snapshot()
			if !slices.ContainsFunc(ms, func(mb membership.Member) bool { return mb.ID == from.ID }) {
				cancel(fmt.Errorf("%s is no longer a member", from.Name))
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	n, err := m.pull(ctx, from, "")
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		err = cause
	}
	return n, err
}

func (p *deltaPlacement) members(membership.Event, []membership.Member) {}

// load: while the state transfer runs, a session this node lacks is
// fetched instead of being reported missing. After it, an id this node
// does not know but whose route names another member is asked of that
// member (at most missRate a second): the member may have made it (a route
// rewrite, a new session) while this node was out of its view for a
// moment, and a user must not get a new, empty session for it.
func (p *deltaPlacement) load(ctx context.Context, id string) (bool, error) {
	return p.loadDelta(ctx, id), nil
}

func (p *deltaPlacement) loadDelta(ctx context.Context, id string) bool {
	m := p.m
	if m.holds(id) {
		return false
	}
	if !m.transferred() {
		if err := p.fetchOne(ctx, id); err != nil {
			m.log.WithField("session", m.ref(id)).WithError(err).Debug("fetch during state transfer failed")
			return false
		}
		return true
	}
	route := Route(id)
	if route == m.local {
		return false
	}
	if _, ok := m.tombs.get(id); ok {
		return false
	}
	for _, mb := range m.members() {
		if mb.Name != route {
			continue
		}
		if !p.misses.take(m.clock.Now(), missRate, missBurst) {
			return false
		}
		in, err := m.fetch(ctx, mb, []string{id})
		if err != nil {
			m.log.WithField("session", m.ref(id)).WithError(err).Debug("fetch of an unknown id failed")
			return false
		}
		return in.answers(id)
	}
	return false
}

// fetchOne fetches one session during state transfer: from the node its
// route names, else from the oldest member.
func (p *deltaPlacement) fetchOne(ctx context.Context, id string) error {
	m := p.m
	// Right after the start the others may not be known yet: wait for them
	// as the state transfer does, not take the session for unknown.
	ms := m.awaitMembers(ctx, m.ready, nil)
	if len(ms) == 0 {
		return nil
	}
	// The node its route names first (it made the session), then the
	// others oldest first; one that is itself catching up refuses.
	order := slices.Clone(ms)
	slices.SortFunc(order, func(a, b membership.Member) int {
		switch {
		case a.Name == Route(id) && b.Name != Route(id):
			return -1
		case b.Name == Route(id) && a.Name != Route(id):
			return 1
		case !a.Started.Equal(b.Started):
			return a.Started.Compare(b.Started)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var errs []error
	for _, from := range order {
		in, err := m.fetch(ctx, from, []string{id})
		if err == nil {
			if in.answers(id) {
				m.stats.fetched.Add(1)
				return nil
			}
			continue
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// targets: every member.
func (p *deltaPlacement) targets(string) plan { return plan{to: p.m.members()} }

func (p *deltaPlacement) committing(string, plan)                {}
func (p *deltaPlacement) committed(context.Context, delta, plan) {}
func (p *deltaPlacement) renamed(string, string, bool)           {}
func (p *deltaPlacement) gone(string)                            {}
func (p *deltaPlacement) renamedAway(string) []string            { return nil }
func (p *deltaPlacement) period() time.Duration                  { return 0 }
func (p *deltaPlacement) shares(string, string) bool             { return true }
func (p *deltaPlacement) keeps(string) bool                      { return false }
func (p *deltaPlacement) takeover(string) string                 { return p.m.local }
func (p *deltaPlacement) standIns(string, []membership.Member) []membership.Member {
	return nil
}
func (p *deltaPlacement) step(time.Time) {}
func (p *deltaPlacement) repairFrom(_ string, sender membership.Member) membership.Member {
	return sender // it had the version this node lacks
}
